/**
 * Just enough OpenAPI v3 for kubectl's validation: kubectl skips client-side
 * schema validation (which would need the full v2 document) when the v3
 * document says the PATCH operation of a kind accepts `fieldValidation`, and
 * then sends `?fieldValidation=Strict` for the server to handle.
 */
import type { ResourceDefinition } from './resources.ts';

const groupVersionPath = (d: ResourceDefinition) =>
  d.group === '' ? `api/${d.version}` : `apis/${d.group}/${d.version}`;

/** `/openapi/v3`: one entry per group-version, pointing at its document. */
export function openApiRoot(resources: readonly ResourceDefinition[], hash: string): unknown {
  const paths: Record<string, { serverRelativeURL: string }> = {};
  for (const d of resources) {
    const gv = groupVersionPath(d);
    paths[gv] = { serverRelativeURL: `/openapi/v3/${gv}?hash=${hash}` };
  }
  return { paths };
}

/** `/openapi/v3/<gv>`: item paths with a PATCH operation that declares `fieldValidation`. */
export function openApiGroupVersion(resources: readonly ResourceDefinition[], gv: string): unknown {
  const served = resources.filter((d) => groupVersionPath(d) === gv);
  if (served.length === 0) return undefined;
  const paths: Record<string, unknown> = {};
  for (const d of served) {
    const scope = d.namespaced ? '/namespaces/{namespace}' : '';
    paths[`/${gv}${scope}/${d.resource}/{name}`] = {
      patch: {
        operationId: `patch${d.kind}`,
        'x-kubernetes-action': 'patch',
        'x-kubernetes-group-version-kind': { group: d.group, version: d.version, kind: d.kind },
        parameters: ['dryRun', 'fieldManager', 'fieldValidation', 'force'].map((name) => ({
          name,
          in: 'query',
          schema: { type: name === 'force' ? 'boolean' : 'string', uniqueItems: true },
        })),
        responses: { '200': { description: 'OK' } },
      },
    };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.32.4' },
    paths,
    components: { schemas: {} },
  };
}
