/**
 * An OCI image layout on disk, as `regvault export` writes it and `regvault
 * import` reads it: a folder, or one tar file (ustar) holding the same
 * paths. A blob is written to a temporary name and renamed once its bytes
 * proved to be its digest; a tar is written in one pass and removed when
 * the export fails.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InputError, messageOf } from '../functions/commons/errors.ts';
import type { LayoutSource } from '../functions/commons/registry/oci-import.ts';
import type { LayoutSink } from '../functions/commons/workflows/export.ts';

const BLOCK = 512;
const blobPath = (digest: string) => `blobs/sha256/${digest.replace(/^sha256:/, '')}`;

/** True when the path names a tar file rather than a folder. */
export const isTar = (path: string): boolean => /\.tar$/i.test(path);

/** A layout written into a folder, made (if missing) by the first write: bad input leaves none. */
export function folderSink(directory: string): LayoutSink {
  let made: Promise<unknown> | undefined;
  const ready = () => {
    made ??= mkdir(join(directory, 'blobs', 'sha256'), { recursive: true });
    return made;
  };
  return {
    async blob(digest, _size, body) {
      await ready();
      const path = join(directory, blobPath(digest));
      const partial = `${path}.partial`;
      try {
        await pipeline(Readable.from(body), createWriteStream(partial));
      } catch (err) {
        await rm(partial, { force: true });
        throw err;
      }
      await rename(partial, path);
    },
    async file(name, bytes) {
      await ready();
      await writeFile(join(directory, name), bytes);
    },
  };
}

/** A ustar header for a regular file (names up to 100 bytes: a layout's longest is 77). */
export function tarHeader(name: string, size: number): Buffer {
  const header = Buffer.alloc(BLOCK);
  const field = (value: string, offset: number, length: number) =>
    header.write(value, offset, length, 'ascii');
  const octal = (value: number, length: number) => value.toString(8).padStart(length - 1, '0');
  field(name, 0, 100);
  field(octal(0o644, 8), 100, 8);
  field(octal(0, 8), 108, 8);
  field(octal(0, 8), 116, 8);
  field(octal(size, 12), 124, 12);
  field(octal(0, 12), 136, 12);
  field('        ', 148, 8);
  field('0', 156, 1);
  field('ustar', 257, 6);
  field('00', 263, 2);
  let checksum = 0;
  for (const byte of header) checksum += byte;
  field(`${octal(checksum, 7)}\0`, 148, 8);
  return header;
}

/** The zeros that end a tar entry of `size` bytes on a block boundary. */
export const padding = (size: number) => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** Writes to a stream, waiting when it asks to. */
async function write(out: WriteStream, bytes: Uint8Array): Promise<void> {
  if (!out.write(bytes)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
}

/** A layout written as one tar file, made by the first write; `close` ends it, `abort` removes it. */
export function tarSink(path: string): LayoutSink & {
  close(): Promise<void>;
  abort(): Promise<void>;
} {
  let opened: Promise<WriteStream> | undefined;
  const stream = () => {
    opened ??= mkdir(dirname(path), { recursive: true }).then(() => createWriteStream(path));
    return opened;
  };
  const ended = async () => {
    const out = await stream();
    await new Promise<void>((resolve, reject) =>
      out.end((err?: Error | null) => (err ? reject(err) : resolve())),
    );
  };
  const entry = async (
    name: string,
    size: number,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ) => {
    const out = await stream();
    await write(out, tarHeader(name, size));
    for await (const chunk of chunks) await write(out, chunk);
    await write(out, padding(size));
  };
  return {
    blob: (digest, size, body) => entry(blobPath(digest), size, body),
    file: (name, bytes) => entry(name, bytes.length, [bytes]),
    async close() {
      await write(await stream(), Buffer.alloc(2 * BLOCK));
      await ended();
    },
    async abort() {
      if (opened === undefined) return;
      await ended().catch(() => undefined);
      await rm(path, { force: true });
    },
  };
}

/** A layout read from a folder. */
function folderSource(directory: string): LayoutSource {
  return {
    read: (path) => readFile(join(directory, path)),
    async open(path) {
      const full = join(directory, path);
      const { size } = await stat(full);
      return { size, body: Readable.toWeb(createReadStream(full)) as ReadableStream<Uint8Array> };
    },
  };
}

/** A layout read from a tar file: its headers are read once for where each file lies. */
async function tarSource(file: string): Promise<LayoutSource> {
  const handle = await open(file, 'r');
  const where = new Map<string, { offset: number; size: number }>();
  try {
    const header = Buffer.alloc(BLOCK);
    for (let at = 0; ; ) {
      const { bytesRead } = await handle.read(header, 0, BLOCK, at);
      if (bytesRead < BLOCK || header.every((byte) => byte === 0)) break;
      const name = header.toString('ascii', 0, 100).replace(/\0.*$/s, '');
      const size = Number.parseInt(
        header.toString('ascii', 124, 136).replace(/\0.*$/s, '').trim(),
        8,
      );
      where.set(name.replace(/^\.\//, ''), { offset: at + BLOCK, size });
      at += BLOCK + size + padding(size).length;
    }
  } finally {
    await handle.close();
  }
  const locate = (path: string) => {
    const found = where.get(path);
    if (found === undefined)
      throw new InputError('the layout is not complete', [`--from: ${file} holds no ${path}`]);
    return found;
  };
  const stream = (path: string) => {
    const { offset, size } = locate(path);
    return { size, body: createReadStream(file, { start: offset, end: offset + size - 1 }) };
  };
  return {
    async read(path) {
      const { size, body } = stream(path);
      if (size === 0) return Buffer.alloc(0);
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },
    async open(path) {
      const { size, body } = stream(path);
      return { size, body: Readable.toWeb(body) as ReadableStream<Uint8Array> };
    },
  };
}

/** The layout at `path` (a folder, or a `.tar` file), or bad input naming `--from`. */
export async function layoutSource(path: string): Promise<LayoutSource> {
  try {
    const found = await stat(path);
    const source = found.isDirectory() ? folderSource(path) : await tarSource(path);
    await source.read('index.json');
    return source;
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError('the layout cannot be read', [
      `--from: ${path} is not an OCI image layout (a folder or a .tar file with index.json): ${messageOf(err)}`,
    ]);
  }
}
