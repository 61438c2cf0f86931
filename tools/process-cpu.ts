// CPU time of a process from /proc, for the measuring tools (bench, release-timing).
import { readFileSync } from 'node:fs';

/** CPU time (user + system) a process has used so far, in seconds; 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    // the fields after the command's closing parenthesis: utime and stime are the 12th and 13th, in ticks of 1/100 s
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}
