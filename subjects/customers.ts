import { Type, type Static } from '@sinclair/typebox';
import { rpc, event, state } from './contract.ts';
import { ById, ByIds, Email, Id, StateVersion, Timestamp } from './common.ts';

export const Role = Type.Union([Type.Literal('customer'), Type.Literal('admin')]);
export type Role = Static<typeof Role>;

/** A customer as other parts see it: never the password or its hash. */
export const Customer = Type.Object(
  {
    id: Id,
    email: Email,
    name: Type.String({ minLength: 1, maxLength: 200 }),
    role: Role,
    createdAt: Timestamp,
    version: Type.Optional(StateVersion),
  },
  { additionalProperties: false },
);
export type Customer = Static<typeof Customer>;

const Password = Type.String({ minLength: 8, maxLength: 200 });

export const customers = {
  register: rpc({
    subject: 'customers.register',
    description: 'Create a customer account. The email must not be taken (EMAIL_TAKEN).',
    idempotent: false,
    request: Type.Object(
      { email: Email, name: Type.String({ minLength: 1, maxLength: 200, pattern: '\\S', description: 'Not blank.' }), password: Password },
      { additionalProperties: false },
    ),
    reply: Customer,
  }),
  authenticate: rpc({
    subject: 'customers.authenticate',
    description: 'Check an email and password; INVALID_CREDENTIALS when either is wrong.',
    idempotent: true,
    request: Type.Object({ email: Email, password: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
    reply: Customer,
  }),
  get: rpc({
    subject: 'customers.get',
    description: 'One customer by id; CUSTOMER_NOT_FOUND when unknown.',
    idempotent: true,
    request: ById,
    reply: Customer,
  }),
  getMany: rpc({
    subject: 'customers.getMany',
    description: 'Customers by id, in the order asked, null where unknown (for loaders).',
    idempotent: true,
    request: ByIds,
    reply: Type.Object({ customers: Type.Array(Type.Union([Customer, Type.Null()])) }, { additionalProperties: false }),
  }),
  registered: event({
    subject: 'customers.events.registered',
    stream: 'CUSTOMERS',
    description: 'A customer account was created.',
    data: Type.Object({ customerId: Id, email: Email, name: Type.String() }, { additionalProperties: false }),
  }),
  profiles: state({
    bucket: 'customers',
    owner: 'customers',
    description: "Every customer's public view (never the password hash), the newest version per customer, for the BFF's replica.",
    value: Customer,
  }),
} as const;
