import { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';

describe('toolchain', () => {
  it('runs on node 22 with esm deps', async () => {
    const fq = await import('fauxqs');
    expect(typeof fq).toBe('object');
    expect(process.versions.node.startsWith('22.')).toBe(true);
    expect(typeof k8s.KubeConfig).toBe('function');
    expect(typeof S3Client).toBe('function');
  });
});
