// The shape of a contract: a subject plus the schemas of what travels on it.
// Types are derived from the schemas (TypeBox), and the same schemas are
// compiled into run-time checks, so the two can never disagree.
import type { Static, TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';

export interface Checker<T extends TSchema> {
  readonly schema: T;
  /** Throws a ContractViolation listing the first problems when `value` does not fit. */
  assert(value: unknown, what: string): asserts value is Static<T>;
  check(value: unknown): value is Static<T>;
  /** The ContractViolation `assert` would throw, or undefined when `value` fits. */
  explain(value: unknown, what: string): ContractViolation | undefined;
}

export interface ViolationIssue {
  path: string;
  message: string;
}

/** A message that does not fit its contract. Carried as VALIDATION_FAILED on the wire. */
export class ContractViolation extends Error {
  override readonly name = 'ContractViolation';
  readonly issues: ViolationIssue[];
  constructor(what: string, issues: ViolationIssue[]) {
    const first = issues[0];
    super(`${what} does not match its contract${first ? `: ${first.path || '/'} ${first.message}` : ''}`);
    this.issues = issues;
  }
}

export function checker<T extends TSchema>(schema: T): Checker<T> {
  const compiled: TypeCheck<T> = TypeCompiler.Compile(schema);
  const explain = (value: unknown, what: string): ContractViolation | undefined => {
    if (compiled.Check(value)) return undefined;
    const issues: ViolationIssue[] = [];
    for (const error of compiled.Errors(value)) {
      issues.push({ path: error.path, message: error.message });
      if (issues.length === 5) break;
    }
    return new ContractViolation(what, issues);
  };
  return {
    schema,
    check: (value): value is Static<T> => compiled.Check(value),
    explain,
    assert(value, what): asserts value is Static<T> {
      const violation = explain(value, what);
      if (violation) throw violation;
    },
  };
}

export interface RpcContract<Req extends TSchema = TSchema, Rep extends TSchema = TSchema> {
  readonly kind: 'rpc';
  /** The NATS subject, `<domain>.<operation>`. */
  readonly subject: string;
  /** The NATS micro service that serves it, and the endpoint name inside it. */
  readonly service: string;
  readonly endpoint: string;
  readonly description: string;
  /** Safe to retry: calling twice has the effect of calling once. */
  readonly idempotent: boolean;
  readonly request: Checker<Req>;
  readonly reply: Checker<Rep>;
}

export type RequestOf<C> = C extends RpcContract<infer Req, TSchema> ? Static<Req> : never;
export type ReplyOf<C> = C extends RpcContract<TSchema, infer Rep> ? Static<Rep> : never;

export function rpc<Req extends TSchema, Rep extends TSchema>(definition: {
  subject: `${string}.${string}`;
  description: string;
  idempotent: boolean;
  request: Req;
  reply: Rep;
}): RpcContract<Req, Rep> {
  const [service, endpoint] = definition.subject.split('.') as [string, string];
  return {
    kind: 'rpc',
    subject: definition.subject,
    service,
    endpoint,
    description: definition.description,
    idempotent: definition.idempotent,
    request: checker(definition.request),
    reply: checker(definition.reply),
  };
}

export interface EventContract<Data extends TSchema = TSchema> {
  readonly kind: 'event';
  /** `<domain>.events.<event>`, always inside `stream`. */
  readonly subject: string;
  readonly stream: string;
  readonly description: string;
  readonly data: Checker<Data>;
}

export type DataOf<C> = C extends EventContract<infer D> ? Static<D> : never;

/** The one envelope every event travels in. `id` is also the `Nats-Msg-Id`. */
export interface Envelope<Data = unknown> {
  id: string;
  type: string;
  occurredAt: string;
  data: Data;
}

export type EnvelopeOf<C> = Envelope<DataOf<C>>;

export function event<Data extends TSchema>(definition: {
  subject: `${string}.events.${string}`;
  stream: string;
  description: string;
  data: Data;
}): EventContract<Data> {
  return {
    kind: 'event',
    subject: definition.subject,
    stream: definition.stream,
    description: definition.description,
    data: checker(definition.data),
  };
}

/**
 * Current state for readers: one key per item (its id) in a NATS KV bucket,
 * the value the item's public view in the event envelope. Written by the
 * owning service through its outbox in the same transaction as the change,
 * so the bucket never disagrees with the database for long; each value
 * carries the item's `version` (bumped with every change of the view), and a
 * reader keeps the highest it has seen.
 */
export interface StateContract<Value extends TSchema = TSchema> {
  readonly kind: 'state';
  /** The KV bucket (stream `KV_<bucket>`, subjects `$KV.<bucket>.<id>`). */
  readonly bucket: string;
  /** The service that owns the items and alone writes the bucket. */
  readonly owner: string;
  readonly description: string;
  readonly value: Checker<Value>;
}

export type StateOf<C> = C extends StateContract<infer V> ? Static<V> : never;

export function state<Value extends TSchema>(definition: {
  bucket: string;
  owner: string;
  description: string;
  value: Value;
}): StateContract<Value> {
  return {
    kind: 'state',
    bucket: definition.bucket,
    owner: definition.owner,
    description: definition.description,
    value: checker(definition.value),
  };
}

/** The subject one item's state is stored under. */
export function stateSubject(contract: StateContract, id: string): string {
  return `$KV.${contract.bucket}.${id}`;
}
