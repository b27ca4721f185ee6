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
const Name = Type.String({ minLength: 1, maxLength: 200, pattern: '\\S', description: 'Not blank.' });
const Text = (maxLength: number) => Type.String({ minLength: 1, maxLength, pattern: '\\S', description: 'Not blank.' });

/** Where a parcel goes: what a shipping address says, and what an order copies. */
export const PostalAddressFields = {
  name: Type.String({ minLength: 1, maxLength: 200, pattern: '\\S', description: 'Who receives it. Not blank.' }),
  line1: Text(200),
  line2: Type.String({ maxLength: 200, description: 'Empty when unused.' }),
  city: Text(100),
  postalCode: Text(20),
  country: Type.String({ pattern: '^[A-Z]{2}$', description: 'ISO 3166-1 alpha-2 code, e.g. DE.' }),
};

/** An address as a customer writes it (line2 may be left out). */
export const AddressInput = Type.Object(
  { ...PostalAddressFields, line2: Type.Optional(PostalAddressFields.line2) },
  { additionalProperties: false },
);
export type AddressInput = Static<typeof AddressInput>;

/** One of a customer's saved shipping addresses; at most one is the default, and one is whenever any exists. */
export const Address = Type.Object(
  { id: Id, ...PostalAddressFields, isDefault: Type.Boolean(), createdAt: Timestamp, updatedAt: Timestamp },
  { additionalProperties: false },
);
export type Address = Static<typeof Address>;

const Addresses = Type.Object(
  { items: Type.Array(Address, { description: 'The default first, then oldest first.' }) },
  { additionalProperties: false },
);
const AddressRef = { customerId: Id, addressId: Id };

/** How many addresses one customer may keep. */
export const MAX_ADDRESSES = 20;

export const customers = {
  register: rpc({
    subject: 'customers.register',
    description: 'Create a customer account. The email must not be taken (EMAIL_TAKEN).',
    idempotent: false,
    request: Type.Object({ email: Email, name: Name, password: Password }, { additionalProperties: false }),
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
  rename: rpc({
    subject: 'customers.rename',
    description: "Change a customer's name; CUSTOMER_NOT_FOUND when unknown. The same name again changes nothing.",
    idempotent: true,
    request: Type.Object({ id: Id, name: Name }, { additionalProperties: false }),
    reply: Customer,
  }),
  listAddresses: rpc({
    subject: 'customers.listAddresses',
    description: "A customer's shipping addresses, the default first; CUSTOMER_NOT_FOUND when unknown.",
    idempotent: true,
    request: Type.Object({ customerId: Id }, { additionalProperties: false }),
    reply: Addresses,
  }),
  addAddress: rpc({
    subject: 'customers.addAddress',
    description: `Save a shipping address; the first one, or one with makeDefault, becomes the default. At most ${MAX_ADDRESSES} (VALIDATION_FAILED).`,
    idempotent: false,
    request: Type.Object(
      { customerId: Id, address: AddressInput, makeDefault: Type.Optional(Type.Boolean()) },
      { additionalProperties: false },
    ),
    reply: Address,
  }),
  updateAddress: rpc({
    subject: 'customers.updateAddress',
    description: 'Replace what a saved address says (orders placed before keep their copy); ADDRESS_NOT_FOUND when not theirs.',
    idempotent: true,
    request: Type.Object({ ...AddressRef, address: AddressInput }, { additionalProperties: false }),
    reply: Address,
  }),
  setDefaultAddress: rpc({
    subject: 'customers.setDefaultAddress',
    description: 'Make a saved address the default (the one orders ship to when they name none); ADDRESS_NOT_FOUND when not theirs.',
    idempotent: true,
    request: Type.Object(AddressRef, { additionalProperties: false }),
    reply: Address,
  }),
  removeAddress: rpc({
    subject: 'customers.removeAddress',
    description:
      'Delete a saved address and answer the ones left; when it was the default, the oldest left becomes the default. ADDRESS_NOT_FOUND when not theirs.',
    idempotent: false,
    request: Type.Object(AddressRef, { additionalProperties: false }),
    reply: Addresses,
  }),
  shippingAddress: rpc({
    subject: 'customers.shippingAddress',
    description:
      'Where an order of this customer ships: the address named, else the default; null when they have none. CUSTOMER_NOT_FOUND, ADDRESS_NOT_FOUND.',
    idempotent: true,
    request: Type.Object({ customerId: Id, addressId: Type.Optional(Id) }, { additionalProperties: false }),
    reply: Type.Object({ address: Type.Union([Address, Type.Null()]) }, { additionalProperties: false }),
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
  renamed: event({
    subject: 'customers.events.renamed',
    stream: 'CUSTOMERS',
    description: 'A customer changed their name.',
    data: Type.Object({ customerId: Id, name: Type.String() }, { additionalProperties: false }),
  }),
} as const;
