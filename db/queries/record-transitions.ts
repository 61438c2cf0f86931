// Set-based record changes (cancel a task's records, retry them, push them, claim them for the
// queue) through the one write path: the selected records are locked page by page in id order
// (wave by wave for the dispatcher), each page's transitions are computed by the state machine
// and written by applyRecordChanges —
// so an operator's cancel of 100,000 records follows the same rules, timeline and counters as a
// device message about one.
import { transition, type RecordInput } from '../../core/record-machine.ts';
import type { Db } from '../connection.ts';
import { applyRecordChanges, changeOf, type RecordChange } from './record-changes.ts';
import { lockUpgradeStates, type RecordSelection, type UpgradeState } from './upgrade-state.ts';

/** Records locked and written per statement: small enough to keep each round trip short. */
const PAGE_SIZE = 2_000;

export interface WrittenChange {
  before: UpgradeState;
  change: RecordChange;
}

/**
 * Applies `input` to every selected record (up to `limit`) in the caller's transaction; returns the
 * changes written. `input` may return several inputs, applied in order as one change.
 */
export async function transitionRecords(
  trx: Db,
  selection: RecordSelection,
  input: (state: UpgradeState) => RecordInput | undefined,
  limit = Infinity,
): Promise<WrittenChange[]> {
  const written: WrittenChange[] = [];
  let after: UpgradeState | undefined;
  while (written.length < limit) {
    const states = await lockUpgradeStates(trx, selection, after, Math.min(PAGE_SIZE, limit - written.length));
    if (states.length === 0) break;
    after = states[states.length - 1];
    const page: WrittenChange[] = [];
    for (const state of states) {
      const next = input(state);
      if (!next) continue;
      const result = transition(state.snapshot, next, state.policy);
      if (result.changed) page.push({ before: state, change: changeOf(state, result) });
    }
    // the records are locked by this transaction: every change applies
    const { applied } = await applyRecordChanges(trx, page.map((entry) => entry.change));
    const appliedIds = new Set(applied.map((change) => change.id));
    written.push(...page.filter((entry) => appliedIds.has(entry.change.id)));
    if (states.length < PAGE_SIZE) break;
  }
  return written;
}
