/**
 * A local directory seen as a bucket: keys are paths relative to its root,
 * listed in S3's key order, written atomically (a temporary file renamed into
 * place), in parts for multipart uploads. This is how regvault reads and
 * writes a registry whose blobs are on a filesystem or a PVC (Docker
 * Distribution's `filesystem` driver keeps the very layout its `s3` driver
 * keeps in a bucket); ./directory.ts puts S3's protocol in front of it, so
 * the copy engine, fsck and the workflows use it as any other bucket.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { mkdir, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';

/** Files regvault writes for itself (temporary files, parts of uploads): never listed. */
export const INTERNAL_PREFIX = '.regvault-';
const MULTIPART_DIR = `${INTERNAL_PREFIX}multipart`;
/** Files up to this size get an MD5 ETag, as S3 gives (links are 71 bytes; fsck proves them by it). */
const MD5_ETAG_MAX_BYTES = 64 * 1024;

/** A failure named as S3 names it (`Code`), with the HTTP status S3 answers it with. */
export class DirectoryStoreError extends Error {
  readonly Code: string;
  readonly status: number;

  constructor(code: string, status: number, message: string) {
    super(message);
    this.name = code;
    this.Code = code;
    this.status = status;
  }
}

export interface StoredObject {
  readonly key: string;
  readonly size: number;
  readonly etag: string;
  readonly lastModified: Date;
}

export interface ListRequest {
  readonly prefix: string;
  /** '' for none. */
  readonly delimiter: string;
  /** Keys (and rolled-up prefixes) after this one only. */
  readonly after: string;
  readonly maxKeys: number;
}

export interface ListResult {
  readonly contents: StoredObject[];
  readonly commonPrefixes: string[];
  /** Set when more follow: the last key or prefix returned. */
  readonly next?: string;
}

/** S3's key order: by UTF-8 bytes. */
const compareKeys = (a: string, b: string): number =>
  Buffer.compare(Buffer.from(a), Buffer.from(b));

/** The S3-style ETag of a file: the MD5 of a small file's bytes, else its size and modification time. */
async function etagOf(path: string, info: Stats): Promise<string> {
  if (info.size <= MD5_ETAG_MAX_BYTES) {
    const hash = createHash('md5');
    await pipeline(createReadStream(path), hash);
    return hash.digest('hex');
  }
  return `${info.size.toString(16)}-${Math.trunc(info.mtimeMs).toString(16)}`;
}

/** One directory's entries in key order: a directory sorts as its name with a '/' after it. */
async function sortedEntries(path: string): Promise<Array<{ name: string; dir: boolean }>> {
  let entries: Array<{ name: string; dir: boolean }>;
  try {
    entries = (await readdir(path, { withFileTypes: true }))
      .filter((e) => !e.name.startsWith(INTERNAL_PREFIX) && (e.isDirectory() || e.isFile()))
      .map((e) => ({ name: e.name, dir: e.isDirectory() }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const sortKey = (e: { name: string; dir: boolean }) => (e.dir ? `${e.name}/` : e.name);
  return entries.sort((a, b) => compareKeys(sortKey(a), sortKey(b)));
}

/** A directory store rooted at `root` (an absolute path that must exist). */
export class DirectoryStore {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** The file of `key`, refusing keys that are not plain relative paths. */
  pathOf(key: string): string {
    const parts = key.split('/');
    if (
      key === '' ||
      key.includes('\0') ||
      parts.some((p) => p === '' || p === '.' || p === '..' || p.includes(sep))
    )
      throw new DirectoryStoreError(
        'InvalidArgument',
        400,
        `key "${key}" is not a relative file path (no empty, "." or ".." segments, no trailing "/")`,
      );
    return join(this.root, ...parts);
  }

  /** Whether the root is a directory. */
  async exists(): Promise<boolean> {
    try {
      return (await stat(this.root)).isDirectory();
    } catch {
      return false;
    }
  }

  async head(key: string): Promise<StoredObject> {
    const path = this.pathOf(key);
    let info: Stats;
    try {
      info = await stat(path);
    } catch {
      throw new DirectoryStoreError('NoSuchKey', 404, `no file ${key} under ${this.root}`);
    }
    if (!info.isFile())
      throw new DirectoryStoreError('NoSuchKey', 404, `no file ${key} under ${this.root}`);
    return { key, size: info.size, etag: await etagOf(path, info), lastModified: info.mtime };
  }

  /**
   * Lists in S3's key order, walking only the directories that can hold what
   * is asked; with a delimiter, keys roll up as S3 rolls them (up to the
   * delimiter's first occurrence after the prefix), and a directory whose
   * path already holds it is rolled up without being walked.
   */
  async list(request: ListRequest): Promise<ListResult> {
    const contents: StoredObject[] = [];
    const commonPrefixes: string[] = [];
    let last: string | undefined;
    let full = false;
    const { prefix, after, delimiter } = request;
    const rolledUp = (key: string): string | undefined => {
      if (delimiter === '') return undefined;
      const at = key.indexOf(delimiter, prefix.length);
      return at < 0 ? undefined : key.slice(0, at + delimiter.length);
    };
    /** Adds one key or common prefix in order; false once the page is full. */
    const add = (element: string, object?: StoredObject): boolean => {
      if (element === last || compareKeys(element, after) <= 0) return true;
      if (contents.length + commonPrefixes.length >= request.maxKeys) {
        full = true;
        return false;
      }
      if (object === undefined) commonPrefixes.push(element);
      else contents.push(object);
      last = element;
      return true;
    };
    const walk = async (dirPath: string, dirKey: string): Promise<void> => {
      for (const entry of await sortedEntries(dirPath)) {
        if (full) return;
        const path = join(dirPath, entry.name);
        if (entry.dir) {
          const key = `${dirKey}${entry.name}/`;
          // Only directories on the way to the prefix, or inside it.
          if (!(key.startsWith(prefix) || prefix.startsWith(key))) continue;
          // Everything under it sorts before `after`.
          if (compareKeys(key, after) < 0 && !after.startsWith(key)) continue;
          const common = key.length > prefix.length ? rolledUp(key) : undefined;
          if (common === undefined) await walk(path, key);
          else if ((await this.#holdsAFile(path)) && !add(common)) return;
          continue;
        }
        const key = `${dirKey}${entry.name}`;
        if (!key.startsWith(prefix) || compareKeys(key, after) <= 0) continue;
        const common = rolledUp(key);
        if (common !== undefined) {
          if (!add(common)) return;
          continue;
        }
        let info: Stats;
        try {
          info = await stat(path);
        } catch {
          continue; // deleted while listed
        }
        const object = {
          key,
          size: info.size,
          etag: await etagOf(path, info),
          lastModified: info.mtime,
        };
        if (!add(key, object)) return;
      }
    };
    await walk(this.root, '');
    return { contents, commonPrefixes, ...(full && last !== undefined ? { next: last } : {}) };
  }

  async #holdsAFile(path: string): Promise<boolean> {
    for (const entry of await sortedEntries(path)) {
      if (!entry.dir || (await this.#holdsAFile(join(path, entry.name)))) return true;
    }
    return false;
  }

  /** A readable stream of `key` (bytes `start`..`end` inclusive when given). */
  read(key: string, range?: { start: number; end: number }): NodeJS.ReadableStream {
    return createReadStream(this.pathOf(key), range);
  }

  /** Writes `key` whole: a temporary file beside it, renamed into place. */
  async write(key: string, body: Uint8Array | AsyncIterable<Uint8Array>): Promise<StoredObject> {
    const path = this.pathOf(key);
    try {
      await mkdir(dirname(path), { recursive: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST' && code !== 'ENOTDIR') throw err;
      // A file system cannot hold both a/b and a/b/c, which a bucket can.
      throw new DirectoryStoreError(
        'InvalidArgument',
        409,
        `key ${key} needs a directory where ${this.root} holds a file of the same name`,
      );
    }
    const temporary = join(dirname(path), `${INTERNAL_PREFIX}${randomBytes(8).toString('hex')}`);
    try {
      await writeFile(temporary, body);
      await rename(temporary, path);
    } catch (err) {
      await rm(temporary, { force: true });
      throw err;
    }
    return this.head(key);
  }

  /** Copies `from` to `to` inside the store, hashing it with SHA-256 on the way when asked. */
  async copy(
    from: string,
    to: string,
    sha256: boolean,
  ): Promise<StoredObject & { sha256?: string }> {
    await this.head(from);
    const hash = sha256 ? createHash('sha256') : undefined;
    const stream = async function* (source: NodeJS.ReadableStream) {
      for await (const chunk of source) {
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        hash?.update(bytes);
        yield bytes;
      }
    };
    const written = await this.write(to, stream(this.read(from)));
    return hash === undefined ? written : { ...written, sha256: hash.digest('base64') };
  }

  /** Deletes `key` (absent is fine, as in S3) and the directories it leaves empty. */
  async delete(key: string): Promise<void> {
    const path = this.pathOf(key);
    await rm(path, { force: true });
    let dir = dirname(path);
    while (dir.startsWith(`${this.root}${sep}`)) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty (or gone): stop
      }
      dir = dirname(dir);
    }
  }

  /** Starts a multipart upload: its parts are files under the root's internal directory. */
  async createUpload(key: string): Promise<string> {
    this.pathOf(key);
    const uploadId = randomBytes(12).toString('hex');
    await mkdir(join(this.root, MULTIPART_DIR, uploadId), { recursive: true });
    return uploadId;
  }

  #partPath(uploadId: string, partNumber: number): string {
    if (!/^[0-9a-f]{24}$/.test(uploadId))
      throw new DirectoryStoreError('NoSuchUpload', 404, `no upload ${uploadId}`);
    return join(this.root, MULTIPART_DIR, uploadId, String(partNumber).padStart(5, '0'));
  }

  async writePart(uploadId: string, partNumber: number, body: Uint8Array): Promise<string> {
    const path = this.#partPath(uploadId, partNumber);
    if (!(await exists(dirname(path))))
      throw new DirectoryStoreError('NoSuchUpload', 404, `no upload ${uploadId}`);
    await writeFile(path, body);
    return createHash('md5').update(body).digest('hex');
  }

  /** Joins the parts, in the order given, into `key`, and ends the upload. */
  async completeUpload(
    key: string,
    uploadId: string,
    parts: readonly number[],
  ): Promise<StoredObject> {
    const paths = parts.map((n) => this.#partPath(uploadId, n));
    for (const path of paths)
      if (!(await exists(path)))
        throw new DirectoryStoreError('InvalidPart', 400, `upload ${uploadId} has no part ${path}`);
    const joined = async function* () {
      for (const path of paths) yield* createReadStream(path) as AsyncIterable<Uint8Array>;
    };
    const written = await this.write(key, joined());
    await this.abortUpload(uploadId);
    return written;
  }

  async abortUpload(uploadId: string): Promise<void> {
    await rm(dirname(this.#partPath(uploadId, 1)), { recursive: true, force: true });
    await rmdir(join(this.root, MULTIPART_DIR)).catch(() => undefined);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
