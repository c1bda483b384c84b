import fs from 'node:fs';

// Podman, CRI-O and buildah keep every container of the host in containers/storage's
// `<graph root>/<driver>-containers/containers.json` (id, names, and podman's image name in
// `metadata`) from `podman create` on, and rewrite the whole file on each change. Reading it
// needs no lock and no exec: `podman inspect` waits for the container's lock, which
// `podman start` and `--rm`'s cleanup hold, so a container OOM-killed at once could be gone
// before inspect answered (measured, host v1 under CI load: the alert went out nameless).

export interface StorageName {
  name?: string;
  image?: string;
}

interface Entry {
  id?: unknown;
  names?: unknown;
  metadata?: unknown;
}

/** The names in one containers.json text, by full id. Pure; odd entries are passed over. */
export function parseContainersJson(text: string): Map<string, StorageName> {
  const out = new Map<string, StorageName>();
  let arr: unknown;
  try {
    arr = JSON.parse(text);
  } catch {
    return out;
  }
  if (!Array.isArray(arr)) return out;
  for (const e of arr as Entry[]) {
    if (!e || typeof e.id !== 'string') continue;
    const info: StorageName = {};
    if (Array.isArray(e.names) && typeof e.names[0] === 'string') info.name = e.names[0];
    if (typeof e.metadata === 'string') {
      try {
        const m = JSON.parse(e.metadata) as Record<string, unknown>;
        if (typeof m['image-name'] === 'string' && m['image-name']) info.image = m['image-name'];
        if (!info.name && typeof m.name === 'string' && m.name) info.name = m.name;
      } catch {
        // metadata is the runtime's own string; not JSON is simply no image
      }
    }
    out.set(e.id, info);
  }
  return out;
}

const DRIVERS = ['overlay', 'vfs', 'btrfs', 'zfs'];

/** containers.json of one graph root, parsed again only when the file changed. */
export class ContainersStorage {
  private file?: string;
  private stamp = '';
  private names = new Map<string, StorageName>();

  constructor(private readonly graphRoot: string) {}

  /** The container's name and image, or undefined when the storage does not know it (or is absent). */
  lookup(id: string): StorageName | undefined {
    const file = this.find();
    if (!file) return undefined;
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      return undefined;
    }
    const stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (stamp !== this.stamp) {
      // Larger than any real host's (about 500 bytes a container): not ours to parse.
      if (st.size > 64 << 20) return undefined;
      try {
        this.names = parseContainersJson(fs.readFileSync(file, 'utf8'));
        this.stamp = stamp;
      } catch {
        return undefined;
      }
    }
    return this.names.get(id);
  }

  private find(): string | undefined {
    if (this.file && fs.existsSync(this.file)) return this.file;
    for (const d of DRIVERS) {
      const f = `${this.graphRoot}/${d}-containers/containers.json`;
      if (fs.existsSync(f)) return (this.file = f);
    }
    return undefined;
  }
}
