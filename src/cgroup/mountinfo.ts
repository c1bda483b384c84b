// Pure parser of /proc/<pid>/mountinfo (proc(5)). I/O lives in layout.ts.

export interface MountEntry {
  mountId: number;
  parentId: number;
  /** "major:minor" of the filesystem. */
  device: string;
  /** Root of the mount inside its filesystem; not "/" in a container that sees only its own cgroup. */
  root: string;
  mountPoint: string;
  /** Per-mount options ("rw,relatime"). */
  mountOptions: string[];
  /** Optional fields before the "-" separator ("shared:5", "master:1"). */
  optionalFields: string[];
  fsType: string;
  source: string;
  /** Per-superblock options; for cgroup v1 these name the controllers ("rw,cpu,cpuacct"). */
  superOptions: string[];
}

/** The kernel escapes space, tab, newline and backslash in paths as 3-digit octal ("\040"). */
export function decodeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function splitOptions(s: string): string[] {
  return s === '' ? [] : s.split(',');
}

/** Parse one mountinfo line; throws with the line when it does not have the expected fields. */
export function parseMountinfoLine(line: string): MountEntry {
  const fields = line.trim().split(' ');
  const sep = fields.indexOf('-', 6);
  if (fields.length < 10 || sep < 6 || fields.length < sep + 3) {
    throw new Error(
      `expected a mountinfo line "id parent major:minor root mountpoint options [optional...] - fstype source superoptions", got ${JSON.stringify(line)}`,
    );
  }
  const mountId = Number(fields[0]);
  const parentId = Number(fields[1]);
  if (!Number.isInteger(mountId) || !Number.isInteger(parentId)) {
    throw new Error(`expected numeric mount ids at the start of mountinfo line ${JSON.stringify(line)}`);
  }
  return {
    mountId,
    parentId,
    device: fields[2]!,
    root: decodeMountPath(fields[3]!),
    mountPoint: decodeMountPath(fields[4]!),
    mountOptions: splitOptions(fields[5]!),
    optionalFields: fields.slice(6, sep),
    fsType: fields[sep + 1]!,
    source: decodeMountPath(fields[sep + 2]!),
    superOptions: splitOptions(fields.slice(sep + 3).join(' ')),
  };
}

/** Parse the whole file; blank lines are ignored. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    out.push(parseMountinfoLine(line));
  }
  return out;
}
