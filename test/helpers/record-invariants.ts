// Invariants every committed state of the database must satisfy, whatever ran before: a task's
// counters (and each of its waves') equal its records counted by state, and each record's state is where its own timeline
// leads (docs/states-and-rules.md#upgrade-records). Everything is read in one REPEATABLE READ
// snapshot, so the check holds at any moment, with workers running: counters, records and events
// are written in one transaction (docs/states-and-rules.md#what-moves-a-record), so no committed
// state may break them.
import { sql } from 'kysely';
import type { Db } from '../../db/connection.ts';
import type { RecordCounts } from '../../core/tasks.ts';

export type InvariantName = 'counters' | 'wave_counters' | 'timeline' | 'task_state' | 'one_active_record';

export interface InvariantViolation {
  invariant: InvariantName;
  taskId: string;
  recordId?: number;
  deviceId?: string;
  detail: string;
}

interface TaskRow extends RecordCounts {
  id: string;
  mode: 'push' | 'pull';
  state: string;
}

interface RecordRow {
  id: number;
  task_id: string;
  device_id: string;
  wave: number;
  state: string;
  attempts: number;
  progress: number;
  retry_pending: boolean;
}

interface WaveRow extends RecordCounts {
  task_id: string;
  index: number;
}

export interface EventRow {
  id: number;
  record_id: number;
  type: string;
  attempt: number;
  progress: number | null;
}

const COUNTED_STATES = ['waiting', 'processing', 'success', 'failed', 'canceled'] as const;

/**
 * Every violation of the invariants among `taskIds` (all tasks when left out). An empty list means
 * the database is consistent.
 */
export async function checkRecordInvariants(db: Db, options: { taskIds?: readonly string[] } = {}): Promise<InvariantViolation[]> {
  const { tasks, records, events, waves } = await db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (trx) => {
      const taskFilter = options.taskIds ? sql`WHERE id = ANY(${[...options.taskIds]}::uuid[])` : sql``;
      const recordFilter = options.taskIds ? sql`WHERE task_id = ANY(${[...options.taskIds]}::uuid[])` : sql``;
      const eventFilter = options.taskIds ? sql`WHERE r.task_id = ANY(${[...options.taskIds]}::uuid[])` : sql``;
      const taskRows = await sql<TaskRow>`
        SELECT id, mode, state, total, waiting, processing, success, failed, canceled
        FROM upgrade_tasks ${taskFilter}`.execute(trx);
      const recordRows = await sql<RecordRow>`
        SELECT id, task_id, device_id, wave, state, attempts, progress, retry_at IS NOT NULL AS retry_pending
        FROM upgrade_records ${recordFilter} ORDER BY id`.execute(trx);
      const eventRows = await sql<EventRow>`
        SELECT e.id, e.record_id, e.type, e.attempt, e.progress
        FROM record_events e JOIN upgrade_records r ON r.id = e.record_id ${eventFilter}
        ORDER BY e.record_id, e.id`.execute(trx);
      const waveRows = await sql<WaveRow>`
        SELECT task_id, index, total, waiting, processing, success, failed, canceled
        FROM task_waves ${recordFilter}`.execute(trx);
      return { tasks: taskRows.rows, records: recordRows.rows, events: eventRows.rows, waves: waveRows.rows };
    });

  const violations: InvariantViolation[] = [];
  const taskById = new Map(tasks.map((task) => [task.id, task]));

  // (a) counters: the task's total and per-state counters against its records
  const counted = new Map<string, Record<string, number>>();
  for (const record of records) {
    const counts = counted.get(record.task_id) ?? { total: 0 };
    counts.total = (counts.total ?? 0) + 1;
    counts[record.state] = (counts[record.state] ?? 0) + 1;
    counted.set(record.task_id, counts);
  }
  for (const task of tasks) {
    const counts = counted.get(task.id) ?? { total: 0 };
    for (const column of ['total', ...COUNTED_STATES] as const) {
      const expected = counts[column] ?? 0;
      if (Number(task[column]) !== expected) {
        violations.push({ invariant: 'counters', taskId: task.id, detail: `${column} is ${task[column]}, but the task has ${expected} such records` });
      }
    }
    // (c) a completed task has every record final (docs/states-and-rules.md#completion)
    if (task.state === 'completed' && ((counts.waiting ?? 0) > 0 || (counts.processing ?? 0) > 0)) {
      violations.push({ invariant: 'task_state', taskId: task.id, detail: `completed with ${counts.waiting ?? 0} waiting and ${counts.processing ?? 0} processing records` });
    }
  }

  // (e) each wave's counters against its records (docs/strategies.md#waves)
  const countedByWave = new Map<string, Record<string, number>>();
  for (const record of records) {
    if (record.wave === 0) continue;
    const key = `${record.task_id}/${record.wave}`;
    const counts = countedByWave.get(key) ?? { total: 0 };
    counts.total = (counts.total ?? 0) + 1;
    counts[record.state] = (counts[record.state] ?? 0) + 1;
    countedByWave.set(key, counts);
  }
  for (const wave of waves) {
    const counts = countedByWave.get(`${wave.task_id}/${wave.index}`) ?? { total: 0 };
    for (const column of ['total', ...COUNTED_STATES] as const) {
      const expected = counts[column] ?? 0;
      if (Number(wave[column]) !== expected) {
        violations.push({ invariant: 'wave_counters', taskId: wave.task_id, detail: `wave ${wave.index}: ${column} is ${wave[column]}, but it has ${expected} such records` });
      }
    }
  }

  // (b) timelines: replay each record's events and compare where they lead with the record
  const eventsOf = new Map<number, EventRow[]>();
  for (const event of events) {
    const list = eventsOf.get(event.record_id) ?? [];
    list.push(event);
    eventsOf.set(event.record_id, list);
  }
  const activeByDevice = new Map<string, RecordRow[]>();
  for (const record of records) {
    const task = taskById.get(record.task_id);
    const mode = task?.mode ?? 'push';
    for (const detail of timelineViolations(record, eventsOf.get(record.id) ?? [], mode)) {
      violations.push({ invariant: 'timeline', taskId: record.task_id, recordId: record.id, deviceId: record.device_id, detail });
    }
    if (record.state === 'waiting' || record.state === 'processing') {
      activeByDevice.set(record.device_id, [...(activeByDevice.get(record.device_id) ?? []), record]);
    }
  }

  // (d) one active upgrade per device (docs/states-and-rules.md#one-active-upgrade-per-device); only
  // among the checked tasks' records
  for (const [deviceId, active] of activeByDevice) {
    if (active.length > 1) {
      violations.push({
        invariant: 'one_active_record',
        taskId: active[0]!.task_id,
        deviceId,
        detail: `${active.length} active records: ${active.map((r) => `${r.id} (${r.state})`).join(', ')}`,
      });
    }
  }
  return violations;
}

/** Where a timeline leads: the record's state, attempt count, and whether a push retry is pending. */
interface Replayed {
  state: 'none' | 'waiting' | 'processing' | 'success' | 'failed' | 'canceled';
  attempts: number;
  retryPending: boolean;
  /** Highest progress reported in the current attempt. */
  progress: number;
}

const FINAL = ['success', 'failed', 'canceled'];

/**
 * Replays a record's events (oldest first) by the rules of docs/states-and-rules.md#record-events and
 * says where they disagree with each other or with the record. Which events move a record:
 * `released` creates it waiting; `sent`/`pulled` start attempt n+1 (from waiting, or from a pending
 * push retry); `retry` after a failed attempt keeps a push record processing with a retry pending
 * (a pull record goes back to waiting), and `retry` with attempt 0 on a failed or canceled record
 * is an operator's reopen to waiting; `success`, `failed` and `canceled` end it. `queued`,
 * `acknowledged`, `progress` and `timeout` move nothing but belong to a state; `ignored` and
 * `downloaded` may come at any time.
 */
export function timelineViolations(record: Pick<RecordRow, 'state' | 'attempts' | 'progress' | 'retry_pending'>, events: readonly Omit<EventRow, 'record_id'>[], mode: 'push' | 'pull'): string[] {
  const problems: string[] = [];
  const at: Replayed = { state: 'none', attempts: 0, retryPending: false, progress: 0 };
  /** A `timeout` must be followed at once by the `retry` or `failed` that ends its attempt. */
  let afterTimeout = false;
  const describe = (event: Omit<EventRow, 'record_id'>) =>
    `event ${event.id} ${event.type}(attempt ${event.attempt}) while ${at.state}${at.retryPending ? ' (retry pending)' : ''} at attempt ${at.attempts}`;
  const inAttempt = () => at.state === 'processing' && !at.retryPending;

  for (const event of events) {
    if (event.type === 'ignored' || event.type === 'downloaded') continue;
    if (afterTimeout && !((event.type === 'retry' || event.type === 'failed') && event.attempt === at.attempts)) {
      problems.push(`${describe(event)}: a timeout must be followed by the retry or failed of its attempt`);
    }
    afterTimeout = false;
    if (at.state === 'none' && event.type !== 'released') {
      problems.push(`${describe(event)}: the first event must be released`);
      // carry on as if it had been released, to report what follows too
      at.state = 'waiting';
    }
    const sameAttempt = event.attempt === at.attempts;
    switch (event.type) {
      case 'released':
        if (at.state !== 'none' || event.attempt !== 0) problems.push(`${describe(event)}: released twice or with an attempt`);
        Object.assign(at, { state: 'waiting', attempts: 0, retryPending: false, progress: 0 });
        break;
      case 'queued':
        if (at.state !== 'waiting') problems.push(`${describe(event)}: only a waiting record is queued`);
        break;
      case 'sent':
      case 'pulled':
        if (!(at.state === 'waiting' || (at.state === 'processing' && at.retryPending))) problems.push(`${describe(event)}: a send starts an attempt only from waiting or a pending retry`);
        if (event.attempt !== at.attempts + 1) problems.push(`${describe(event)}: a send starts attempt ${at.attempts + 1}`);
        Object.assign(at, { state: 'processing', attempts: event.attempt, retryPending: false, progress: 0 });
        break;
      case 'acknowledged':
      case 'timeout':
        if (!inAttempt() || !sameAttempt) problems.push(`${describe(event)}: only during the attempt it names`);
        if (event.type === 'timeout') afterTimeout = true;
        break;
      case 'progress':
        if (!inAttempt() || !sameAttempt) problems.push(`${describe(event)}: only during the attempt it names`);
        if (event.progress === null || event.progress <= at.progress) problems.push(`${describe(event)}: progress ${event.progress} does not rise above ${at.progress}`);
        at.progress = Math.max(at.progress, event.progress ?? 0);
        break;
      case 'retry':
        if (FINAL.includes(at.state) && at.state !== 'success' && event.attempt === 0) {
          // an operator's reopen: attempts reset
          Object.assign(at, { state: 'waiting', attempts: 0, retryPending: false, progress: 0 });
        } else {
          if (!inAttempt() || !sameAttempt) problems.push(`${describe(event)}: a retry follows a failed attempt, or reopens a failed or canceled record (attempt 0)`);
          if (mode === 'pull') Object.assign(at, { state: 'waiting', retryPending: false, progress: 0 });
          else Object.assign(at, { state: 'processing', retryPending: true });
        }
        break;
      case 'success':
        // a report of the target version ends even a pending retry
        if (at.state !== 'processing' || !sameAttempt) problems.push(`${describe(event)}: success ends a processing record's current attempt`);
        Object.assign(at, { state: 'success', retryPending: false, progress: 100 });
        break;
      case 'failed':
        if (!inAttempt() || !sameAttempt) problems.push(`${describe(event)}: failed ends the attempt under way`);
        Object.assign(at, { state: 'failed', retryPending: false });
        break;
      case 'canceled':
        if ((at.state !== 'waiting' && at.state !== 'processing') || !sameAttempt) problems.push(`${describe(event)}: only a waiting or processing record is canceled, at its attempt`);
        Object.assign(at, { state: 'canceled', retryPending: false });
        break;
      default:
        problems.push(`event ${event.id}: unknown type ${event.type}`);
    }
  }
  if (afterTimeout) problems.push('the timeline ends with a timeout, without the retry or failed of its attempt');

  if (at.state !== record.state) problems.push(`the record is ${record.state}, its timeline leads to ${at.state}`);
  if (at.attempts !== record.attempts) problems.push(`the record has ${record.attempts} attempts, its timeline ${at.attempts}`);
  if (record.state === 'processing' && at.state === 'processing' && at.retryPending !== record.retry_pending) {
    problems.push(`the record ${record.retry_pending ? 'has' : 'has no'} retry pending, its timeline says the opposite`);
  }
  if ((record.state === 'processing' && at.state === 'processing') || record.state === 'success') {
    if (record.progress !== at.progress) problems.push(`the record's progress is ${record.progress}, its timeline's ${at.progress}`);
  }
  if (record.state === 'waiting' && record.progress !== 0) problems.push(`a waiting record with progress ${record.progress}`);
  return problems;
}
