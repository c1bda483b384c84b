import path from 'node:path';
import { V1CgroupFs } from './v1';
import { V2CgroupFs } from './v2';
import { CgroupError, type CgroupFs, type CgroupLayout } from './types';

export { detectLayout, layoutFromMounts } from './layout';
export { CounterReader, type CounterReaderOptions } from './counter-reader';
export { countCpuList } from './parsers';
export * from './types';

/** The CgroupFs for the layout's version; refuses a layout whose mounts lie outside `cgroupRoot`. */
export function openCgroupFs(layout: CgroupLayout, cgroupRoot: string): CgroupFs {
  const root = path.resolve(cgroupRoot);
  const mounts = [...Object.values(layout.v1Mounts), ...(layout.v2Mount === undefined ? [] : [layout.v2Mount])];
  for (const m of mounts) {
    if (root !== '/' && m !== root && !m.startsWith(root + '/')) {
      throw new CgroupError(`cgroup mount ${m} lies outside paths.cgroupRoot ${root}: detect the layout with the same root`, m);
    }
  }
  return layout.version === 'v2' ? new V2CgroupFs(layout) : new V1CgroupFs(layout);
}
