// A shortcut around node-postgres's public way of running a statement, kept
// only while an A/B shows it pays (SHOP_SQL_RIDE_ALONG=1 turns it on;
// bench/README.md "Shortcuts" and docs/decisions.md "Statements riding with BEGIN and
// COMMIT" have the figures). The default is the library's own way: BEGIN,
// each statement with its parameters (named: parsed once per connection),
// COMMIT, a round trip each (db.ts: Transaction).
//
// Turned on, a Transaction sends its first statement in one text with BEGIN
// (the inbox row, the relay's claim) and a write nothing reads back (the
// outbox) in one text with COMMIT: two round trips fewer per transaction. One
// text of several statements goes by the simple query protocol, which has no
// parameters, so the values are inlined as escaped literals here.
import pg from 'pg';

export const rideAlong = process.env.SHOP_SQL_RIDE_ALONG === '1';

/** `text` with each `$n` replaced by its value of `values` as an escaped literal (strings, numbers, null, arrays of strings). */
export function inlineValues(text: string, values: readonly unknown[]): string {
  return text.replace(/\$(\d+)/g, (_match, index: string) => literal(values[Number(index) - 1]));
}

function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return pg.escapeLiteral(`{${value.map(arrayElement).join(',')}}`);
  return pg.escapeLiteral(String(value));
}

/** One element of a PostgreSQL array literal: quoted, its quotes and backslashes escaped. */
function arrayElement(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  return `"${String(value).replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
