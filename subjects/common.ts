// Building blocks shared by several contracts.
import { FormatRegistry, Type, type Static, type TSchema } from '@sinclair/typebox';

// TypeBox ships no string formats; register the ones our contracts use.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
if (!FormatRegistry.Has('uuid')) FormatRegistry.Set('uuid', (value) => UUID.test(value));
if (!FormatRegistry.Has('email')) FormatRegistry.Set('email', (value) => EMAIL.test(value));
if (!FormatRegistry.Has('date-time')) {
  FormatRegistry.Set('date-time', (value) => !Number.isNaN(Date.parse(value)) && value.includes('T'));
}

export const Id = Type.String({ format: 'uuid', description: 'A UUID.' });
export const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601 instant, UTC.' });
/** An item's state version: bumped in the transaction of every change of its public view (read models keep the highest). */
export const StateVersion = Type.Integer({ minimum: 1, description: 'Bumped with every change of the public view.' });
export const Email = Type.String({ format: 'email', minLength: 3, maxLength: 254 });
export const Currency = Type.String({ pattern: '^[A-Z]{3}$', description: 'ISO 4217 code, e.g. EUR.' });

/** Money is an integer count of minor units (cents) with its currency. */
export const Money = Type.Object(
  {
    amount: Type.Integer({ minimum: 0, maximum: 1_000_000_000_00, description: 'Minor units, e.g. cents.' }),
    currency: Currency,
  },
  { additionalProperties: false },
);
export type Money = Static<typeof Money>;

export const ById = Type.Object({ id: Id }, { additionalProperties: false });

export const ByIds = Type.Object(
  { ids: Type.Array(Id, { maxItems: 500, description: 'At most 500 ids per call.' }) },
  { additionalProperties: false },
);

/** Cursor paging: `after` is the `nextCursor` of the previous page. */
export const PageRequest = {
  first: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
  after: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
};

export function Page<T extends TSchema>(item: T) {
  return Type.Object(
    {
      items: Type.Array(item),
      nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'null on the last page.' }),
    },
    { additionalProperties: false },
  );
}

/** The envelope of every event on the wire; `data` is checked by the event's own contract. */
export const EventEnvelope = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 200 }),
  type: Type.String({ minLength: 1, maxLength: 200 }),
  occurredAt: Timestamp,
  data: Type.Unknown(),
});
