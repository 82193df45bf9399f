import { createHash } from 'node:crypto';
import { describe, expect, it } from '@jest/globals';
import { References, Referrer } from '../../functions/commons/workflows/catalog.ts';

const digest = (seed: string) => createHash('sha256').update(seed).digest('hex');

describe("finalize's reference check", () => {
  it('matches references to blobs in digest order, also among digests that share their first bytes', () => {
    // Prepare: random digests, digests that share their first five bytes with
    // another and differ after, and a digest referred to twice
    const random = Array.from({ length: 400 }, (_, i) => digest(`blob-${i}`));
    const twins = random
      .slice(0, 60)
      .map((hex, i) => `${hex.slice(0, 10)}${digest(`twin-${i}`).slice(10)}`);
    const referred = [...random, ...twins, random[7] ?? ''];
    const references = new References();
    for (const [name, hex] of referred.entries()) references.add(hex, Referrer.Layer, name);
    const blobs = [...new Set(referred)].sort();
    const absent = new Set([blobs[0], blobs[5], random[7], twins[3], blobs.at(-1)]);
    // Act
    const missing: Array<{ hex: string; name: number }> = [];
    const report = (_referrer: Referrer, name: number, hex: string) => missing.push({ hex, name });
    for (const hex of blobs) if (!absent.has(hex)) references.blob(hex, report);
    references.end(report);
    // Assess: every reference to an absent blob, in digest order; the one referred to twice, twice
    const expected = referred
      .map((hex, name) => ({ hex, name }))
      .filter(({ hex }) => absent.has(hex))
      .sort((a, b) => a.hex.localeCompare(b.hex) || a.name - b.name);
    expect(missing).toEqual(expected);
    expect(missing.filter(({ hex }) => hex === random[7])).toHaveLength(2);
  });

  it('refuses blobs out of digest order', () => {
    // Prepare
    const references = new References();
    references.add(digest('a'), Referrer.Revision, 0);
    const [low, high] = [digest('a'), digest('b')].sort();
    references.blob(high ?? '', () => undefined);
    // Act and assess
    expect(() => references.blob(low ?? '', () => undefined)).toThrow(/out of digest order/);
  });
});
