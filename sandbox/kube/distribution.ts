/**
 * The sandbox's kubelet for a Docker Distribution registry run as a plain
 * Deployment (the docker-registry and Harbor charts): each pod runs a real
 * registry process configured as the container would be, from the
 * `config.yml` its pod template mounts (a ConfigMap or a Secret volume) with
 * the container's `REGISTRY_STORAGE_S3_*` env on top (values, or keys from a
 * Secret). As with a real Deployment, pods roll only when the pod template
 * changes: editing the ConfigMap alone changes nothing until the template
 * does (the charts put a checksum of the config in a template annotation).
 */
import { join, relative } from 'node:path';
import { parse } from 'yaml';
import {
  type Desired,
  directoryConfig,
  failingWith,
  hashOfConfig,
  type RegistryConfig,
  type RegistryWorkload,
  recordOf,
  textOf,
} from './controller.ts';
import { BuiltIn } from './resources.ts';
import type { KubeApiServer } from './server.ts';

/** Where the registry's config.yml sits in a container, as in the registry image. */
export const CONFIG_DIRECTORY = '/etc/docker/registry';

const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

/** The registry Deployment `namespace/name` as a workload the controller runs. */
export function distributionWorkload(
  server: KubeApiServer,
  namespace: string,
  deployment: string,
  claimDirectory?: (namespace: string, claimName: string) => string | undefined,
): RegistryWorkload {
  const { store } = server;
  const decoded = (secretName: string, key: string): string | undefined => {
    const secret = store.get(BuiltIn.secrets, namespace, secretName);
    const value = textOf(recordOf(secret?.['data'])[key]);
    return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
  };
  return {
    namespace,
    app: deployment,
    get container() {
      const object = store.get(BuiltIn.deployments, namespace, deployment);
      const pod = recordOf(recordOf(recordOf(object?.['spec'])['template'])['spec']);
      return textOf(recordOf(list(pod['containers'])[0])['name']) ?? 'registry';
    },
    deployment,
    get podLabels() {
      const object = store.get(BuiltIn.deployments, namespace, deployment);
      const selector = recordOf(recordOf(recordOf(object?.['spec'])['selector'])['matchLabels']);
      return Object.fromEntries(
        Object.entries(selector).filter(
          (entry): entry is [string, string] => typeof entry[1] === 'string',
        ),
      );
    },
    relevant: ({ ref, object }) =>
      ref.resource === 'deployments' &&
      object.metadata.namespace === namespace &&
      object.metadata.name === deployment,
    desired(): Desired | undefined {
      const object = store.get(BuiltIn.deployments, namespace, deployment);
      if (object === undefined) return undefined;
      const template = recordOf(recordOf(object['spec'])['template']);
      const pod = recordOf(template['spec']);
      const container = recordOf(list(pod['containers'])[0]);
      const env = list(container['env']).map(recordOf);
      const image = textOf(container['image']) ?? 'registry:2';
      // The revision is the template, as a ReplicaSet's pod-template-hash.
      const hash = hashOfConfig(template);
      const failed = failingWith({ hash, image, env });

      const mount = list(container['volumeMounts'])
        .map(recordOf)
        .find((m) => {
          // The image's own directory, or the file itself (Harbor: /etc/registry/config.yml).
          const path = textOf(m['mountPath'])?.replace(/\/$/, '');
          return path === CONFIG_DIRECTORY || path?.endsWith('/config.yml') === true;
        });
      const volume = list(pod['volumes'])
        .map(recordOf)
        .find((v) => mount !== undefined && v['name'] === mount['name']);
      let text: string | undefined;
      if (volume !== undefined) {
        const configMap = textOf(recordOf(volume['configMap'])['name']);
        const secret = textOf(recordOf(volume['secret'])['secretName']);
        if (configMap !== undefined) {
          const found = store.get(BuiltIn.configmaps, namespace, configMap);
          if (found === undefined) return failed(`configmap "${configMap}" not found`);
          text = textOf(recordOf(found['data'])['config.yml']);
        } else if (secret !== undefined) {
          if (store.get(BuiltIn.secrets, namespace, secret) === undefined)
            return failed(`secret "${secret}" not found`);
          text = decoded(secret, 'config.yml');
        }
      }
      const storage = recordOf(recordOf(text === undefined ? {} : parse(text))['storage']);
      if (storage['filesystem'] !== undefined) {
        // The chart's persistence: the filesystem driver on the claim mounted at its rootdirectory.
        const root =
          textOf(recordOf(storage['filesystem'])['rootdirectory']) ?? '/var/lib/registry';
        const data = list(container['volumeMounts'])
          .map(recordOf)
          .find((m) => {
            const path = textOf(m['mountPath'])?.replace(/\/$/, '');
            return path !== undefined && (root === path || root.startsWith(`${path}/`));
          });
        const claim = textOf(
          recordOf(
            list(pod['volumes'])
              .map(recordOf)
              .find((v) => data !== undefined && v['name'] === data['name'])?.[
              'persistentVolumeClaim'
            ],
          )['claimName'],
        );
        const directory = claim === undefined ? undefined : claimDirectory?.(namespace, claim);
        if (data === undefined || claim === undefined)
          return failed(`no persistentVolumeClaim is mounted at ${root}`);
        if (directory === undefined)
          return failed(`persistentvolumeclaim "${claim}" not found in namespace ${namespace}`);
        const mountPath = (textOf(data['mountPath']) ?? '').replace(/\/$/, '');
        const config = directoryConfig(
          join(directory, textOf(data['subPath']) ?? '', relative(mountPath, root)),
        );
        return { hash, image, env, config, problem: undefined };
      }
      const s3 = recordOf(storage['s3']);
      // The registry reads REGISTRY_STORAGE_S3_<FIELD> over config.yml's storage.s3.<field>.
      const field = (name: string): string | undefined => {
        const variable = env.find((e) => e['name'] === `REGISTRY_STORAGE_S3_${name.toUpperCase()}`);
        if (variable === undefined) {
          // A Secret taken whole through envFrom (Harbor's) sets variables by its data keys.
          const fromSecret = list(container['envFrom'])
            .map((e) => textOf(recordOf(recordOf(e)['secretRef'])['name']))
            .flatMap((secretName) =>
              secretName === undefined
                ? []
                : [decoded(secretName, `REGISTRY_STORAGE_S3_${name.toUpperCase()}`)],
            )
            .find((value) => value !== undefined);
          return fromSecret ?? textOf(s3[name]);
        }
        const plain = textOf(variable['value']);
        if (plain !== undefined) return plain;
        const ref = recordOf(recordOf(variable['valueFrom'])['secretKeyRef']);
        const secretName = textOf(ref['name']);
        const key = textOf(ref['key']);
        return secretName === undefined || key === undefined ? undefined : decoded(secretName, key);
      };
      const missing = ['bucket', 'region', 'regionendpoint', 'accesskey', 'secretkey'].filter(
        (name) => field(name) === undefined,
      );
      if (missing.length > 0)
        return failed(`storage.s3 is incomplete: missing ${missing.join(', ')}`);
      const rootDirectory = field('rootdirectory');
      const config: RegistryConfig = {
        bucket: field('bucket') ?? '',
        endpoint: field('regionendpoint') ?? '',
        region: field('region') ?? '',
        accessKey: field('accesskey') ?? '',
        secretKey: field('secretkey') ?? '',
        ...(rootDirectory === undefined ? {} : { rootDirectory }),
      };
      return { hash, image, env, config, problem: undefined };
    },
  };
}
