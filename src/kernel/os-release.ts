import fs from 'node:fs';

/**
 * The distribution from os-release(5): PRETTY_NAME, else NAME and VERSION_ID. Pure: the
 * caller reads the file. (systeminformation's osInfo() runs `cat /etc/*-release` through a
 * shell and `hostname -f` with execSync, which blocks the event loop on a slow resolver.)
 */
export function parseOsRelease(text: string): string | undefined {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let v = m[2]!;
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) v = v.slice(1, -1).replace(/\\(["$`\\])/g, '$1');
    vars.set(m[1]!, v);
  }
  const pretty = vars.get('PRETTY_NAME');
  if (pretty) return pretty;
  const name = vars.get('NAME');
  return name ? [name, vars.get('VERSION_ID')].filter(Boolean).join(' ') : undefined;
}

/** /etc/os-release, then /usr/lib/os-release (os-release(5)); undefined when neither reads. */
export function readDistro(etcRoot = '/etc'): string | undefined {
  for (const file of [`${etcRoot}/os-release`, '/usr/lib/os-release']) {
    try {
      return parseOsRelease(fs.readFileSync(file, 'utf8'));
    } catch {
      /* the next one */
    }
  }
  return undefined;
}
