// The storefront: plain JavaScript against the BFF's GraphQL API. Queries and
// mutations over HTTP POST /graphql; live order status over a WebSocket on
// /graphql speaking graphql-transport-ws. No framework, no build step; every
// text from the server goes into the page through textContent, never as HTML.

const TOKEN_KEY = 'shop.token';
const state = {
  token: localStorage.getItem(TOKEN_KEY),
  me: null,
  products: new Map(),
  productsCursor: null,
  search: '',
  // productId -> { product, quantity }: each line keeps its product, whatever page the catalog shows.
  cart: new Map(),
  // The checkout under way: its request and idempotency key (placeOrder).
  checkout: null, // { request, key }
  ordersCursor: null,
  live: null, // { id, order, socket, retries, timer, finished }
};

const $ = (id) => document.getElementById(id);

// --- GraphQL over HTTP -------------------------------------------------------------------------

class GraphQLFailure extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join('; '));
    this.errors = errors;
    this.code = errors[0]?.extensions?.code;
  }
}

async function graphql(query, variables = {}, extraHeaders = {}) {
  const headers = { 'content-type': 'application/json', ...extraHeaders };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new GraphQLFailure([{ message: 'The shop cannot be reached. Check your connection.', extensions: { code: 'NETWORK' } }]);
  }
  const body = await response.json().catch(() => ({ errors: [{ message: `HTTP ${response.status}` }] }));
  if (body.errors?.length) {
    if (body.errors.some((e) => e.extensions?.code === 'UNAUTHENTICATED') && state.token) signOut('Your session ended; sign in again.');
    // Partial data: hand back what came, and say what did not.
    if (body.data) {
      flash(body.errors.map((e) => e.message).join('; '), 'warn');
      return body.data;
    }
    throw new GraphQLFailure(body.errors);
  }
  return body.data;
}

// --- Money and small helpers -------------------------------------------------------------------

function money({ amount, currency }) {
  const format = new Intl.NumberFormat(undefined, { style: 'currency', currency });
  const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
  return format.format(amount / 10 ** digits);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

let flashTimer;
function flash(message, kind = 'info') {
  const box = $('flash');
  box.textContent = message;
  box.className = `flash ${kind}`;
  box.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => (box.hidden = true), 8000);
}

function failed(error) {
  flash(error instanceof GraphQLFailure ? error.message : 'Something went wrong.', 'error');
}

// --- Products ---------------------------------------------------------------------------------

const PRODUCT_FIELDS = 'id sku name description available price { amount currency }';

async function loadProducts({ more = false } = {}) {
  const data = await graphql(
    `query Products($search: String, $after: String) {
      products(search: $search, first: 12, after: $after) {
        edges { node { ${PRODUCT_FIELDS} } }
        pageInfo { endCursor hasNextPage }
      }
    }`,
    { search: state.search || null, after: more ? state.productsCursor : null },
  );
  if (!more) {
    state.products.clear();
    $('products').replaceChildren();
  }
  const page = data.products;
  if (!page) return;
  for (const { node } of page.edges) {
    state.products.set(node.id, node);
    $('products').append(productCard(node));
    refreshCartLine(node);
  }
  state.productsCursor = page.pageInfo.endCursor;
  $('more-products').hidden = !page.pageInfo.hasNextPage;
  $('products-empty').hidden = state.products.size > 0;
  renderCart();
}

function productCard(product) {
  const quantity = el('input', { type: 'number', min: 1, max: 1000, value: 1, className: 'qty', ariaLabel: `Quantity of ${product.name}` });
  const soldOut = product.available === 0;
  return el(
    'li',
    { class: 'product', dataset: { productId: product.id } },
    el('h3', {}, product.name),
    el('p', { class: 'muted sku' }, product.sku),
    product.description ? el('p', { class: 'description' }, product.description) : null,
    el('p', { class: 'price' }, money(product.price)),
    el('p', { class: soldOut ? 'stock out' : 'stock' }, soldOut ? 'Sold out' : `${product.available} in stock`),
    el(
      'div',
      { class: 'buy' },
      quantity,
      el('button', {
        type: 'button',
        className: 'add',
        disabled: soldOut,
        textContent: 'Add to cart',
        onclick: () => addToCart(product, Number(quantity.value)),
      }),
    ),
  );
}

// A product as the shop says it is now (after an order settles, its stock): its card, if
// shown, is redrawn where it stands, and a cart line holding it takes the new data.
function updateProduct(product) {
  if (state.products.has(product.id)) {
    state.products.set(product.id, product);
    document.querySelector(`.product[data-product-id="${CSS.escape(product.id)}"]`)?.replaceWith(productCard(product));
  }
  if (refreshCartLine(product)) renderCart();
}

// --- Cart and checkout --------------------------------------------------------------------------

function addToCart(product, quantity) {
  if (!Number.isInteger(quantity) || quantity < 1) return flash('Choose a quantity of 1 or more.', 'error');
  const line = state.cart.get(product.id);
  state.cart.set(product.id, { product, quantity: Math.min(1000, (line?.quantity ?? 0) + quantity) });
  renderCart();
}

/** Gives a cart line the newest data of its product; true when the cart holds it. */
function refreshCartLine(product) {
  const line = state.cart.get(product.id);
  if (line) line.product = product;
  return Boolean(line);
}

/** 128 random bits as hex (crypto.randomUUID needs a secure context; getRandomValues does not). */
function newIdempotencyKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

function renderCart() {
  const list = $('cart-lines');
  list.replaceChildren();
  const totals = new Map();
  for (const [productId, { product, quantity }] of state.cart) {
    const { amount, currency } = product.price;
    totals.set(currency, (totals.get(currency) ?? 0) + amount * quantity);
    list.append(
      el(
        'li',
        {},
        el('span', {}, `${quantity} × ${product.name}`),
        el('span', {}, money({ amount: amount * quantity, currency })),
        el('button', {
          type: 'button',
          className: 'link',
          textContent: 'Remove',
          ariaLabel: `Remove ${product.name}`,
          onclick: () => {
            state.cart.delete(productId);
            renderCart();
          },
        }),
      ),
    );
  }
  const empty = state.cart.size === 0;
  $('cart-empty').hidden = !empty;
  $('checkout-form').hidden = empty;
  $('cart-total').textContent = [...totals].map(([currency, amount]) => money({ amount, currency })).join(' + ');
}

const ORDER_FIELDS = `id status createdAt cancelReason
  total { amount currency }
  lines { quantity name lineTotal { amount currency } }
  history { status at reason }
  shipment { status carrier trackingNumber history { status at note } }`;

async function placeOrder(event) {
  event.preventDefault();
  if (!state.token) return flash('Sign in or register to place an order.', 'error');
  const button = $('place-order');
  button.disabled = true;
  try {
    const lines = [...state.cart].map(([productId, { quantity }]) => ({ productId, quantity }));
    const variables = { lines, token: $('payment-token').value.trim() };
    // One key per checkout: pressing again after a lost answer gets the same order, never a
    // second one; another cart or token is another checkout, with a key of its own.
    const request = JSON.stringify(variables);
    if (state.checkout?.request !== request) state.checkout = { request, key: newIdempotencyKey() };
    const data = await graphql(
      `mutation Place($lines: [OrderLineInput!]!, $token: String!) { placeOrder(lines: $lines, paymentToken: $token) { ${ORDER_FIELDS} } }`,
      variables,
      { 'idempotency-key': state.checkout.key },
    );
    state.checkout = null;
    state.cart.clear();
    renderCart();
    flash('Order placed. Watching its status…');
    watchOrder(data.placeOrder);
    void loadOrders();
  } catch (error) {
    failed(error);
  } finally {
    button.disabled = false;
  }
}

// --- Live order status over WebSocket (graphql-transport-ws) -------------------------------------

// A dropped connection (the network, a BFF restart) is opened again after a delay that doubles
// from the first to the last, until one is acknowledged; the subscription's first value is the
// order as it is then, so nothing missed meanwhile is lost.
const RECONNECT_FIRST_MS = 500;
const RECONNECT_LAST_MS = 30_000;

// Each status event carries the order's products as they are now: their stock moves as orders settle.
const LIVE_ORDER_FIELDS = `${ORDER_FIELDS} lines { product { ${PRODUCT_FIELDS} } }`;

function watchOrder(order) {
  stopWatching();
  renderLive(order);
  state.live = { id: order.id, order, socket: null, retries: 0, timer: undefined, finished: false };
  connectLive(state.live);
}

function connectLive(live) {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
  const socket = new WebSocket(url, 'graphql-transport-ws');
  live.socket = socket;
  const status = (text) => ($('live-connection').textContent = text);
  status('(connecting…)');
  socket.addEventListener('open', () => {
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${state.token}` } }));
  });
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(event.data);
    switch (message.type) {
      case 'connection_ack':
        live.retries = 0;
        status('(live)');
        socket.send(
          JSON.stringify({
            id: '1',
            type: 'subscribe',
            payload: {
              query: `subscription Watch($id: ID!) { orderUpdated(id: $id) { ${LIVE_ORDER_FIELDS} } }`,
              variables: { id: live.id },
            },
          }),
        );
        break;
      case 'next':
        if (message.payload?.data?.orderUpdated) {
          showOrderUpdate(message.payload.data.orderUpdated);
        } else if (message.payload?.errors) {
          flash(message.payload.errors.map((e) => e.message).join('; '), 'error');
        }
        break;
      case 'error':
        // The subscription was refused (the order is not yours, the session ended): asking again would not help.
        live.finished = true;
        status('');
        flash((message.payload ?? []).map((e) => e.message).join('; ') || 'Live updates failed.', 'error');
        break;
      case 'complete':
        live.finished = true;
        status('(final)');
        break;
      case 'ping':
        socket.send(JSON.stringify({ type: 'pong' }));
        break;
      case 'connection_error':
        live.finished = true;
        status('(not live)');
        break;
    }
  });
  socket.addEventListener('close', () => {
    if (state.live !== live || live.finished) return;
    const delay = Math.min(RECONNECT_LAST_MS, RECONNECT_FIRST_MS * 2 ** live.retries);
    live.retries += 1;
    status('(reconnecting…)');
    live.timer = setTimeout(() => connectLive(live), delay);
  });
}

function stopWatching() {
  if (state.live) {
    state.live.finished = true;
    clearTimeout(state.live.timer);
    state.live.socket?.close();
    state.live = null;
  }
}

// A status event changes what is shown of the order and its products where they stand:
// the catalog keeps every page loaded, the list of orders keeps its older ones.
function showOrderUpdate(order) {
  if (state.live?.id === order.id) state.live.order = order;
  renderLive(order);
  for (const line of order.lines) if (line.product) updateProduct(line.product);
  document.querySelector(`#order-list .order[data-order-id="${CSS.escape(order.id)}"]`)?.replaceWith(orderRow(order));
}

function renderLive(order) {
  $('live').hidden = false;
  $('live-id').textContent = `#${order.id.slice(0, 8).toUpperCase()}`;
  const status = $('live-status');
  status.textContent = order.status;
  status.className = `status ${order.status.toLowerCase()}`;
  status.dataset.orderId = order.id;
  $('live-history').replaceChildren(
    ...order.history.map((change) =>
      el(
        'li',
        {},
        el('span', { class: `status ${change.status.toLowerCase()}` }, change.status),
        ` ${new Date(change.at).toLocaleTimeString()}`,
        change.reason ? el('span', { class: 'muted' }, ` — ${change.reason}`) : null,
      ),
    ),
  );
  renderShipment(order.shipment);
  // Once shipped, the shop refuses a cancel (ORDER_NOT_CANCELLABLE): the button goes.
  $('cancel-order').hidden = order.status === 'CANCELLED' || isShipped(order.shipment);
}

function isShipped(shipment) {
  return shipment?.status === 'SHIPPED' || shipment?.status === 'DELIVERED';
}

function renderShipment(shipment) {
  $('live-shipment').hidden = !shipment;
  if (!shipment) return;
  const status = $('shipment-status');
  status.textContent = shipment.status;
  status.className = `status ${shipment.status.toLowerCase()}`;
  $('shipment-carrier').textContent = `with ${shipment.carrier}`;
  $('shipment-tracking').textContent = shipment.trackingNumber ? `· tracking ${shipment.trackingNumber}` : '';
  $('shipment-history').replaceChildren(
    ...shipment.history.map((step) =>
      el(
        'li',
        {},
        el('span', { class: `status ${step.status.toLowerCase()}` }, step.status),
        ` ${new Date(step.at).toLocaleTimeString()}`,
        step.note ? el('span', { class: 'muted' }, ` — ${step.note}`) : null,
      ),
    ),
  );
}

async function cancelLiveOrder() {
  if (!state.live) return;
  try {
    await graphql(`mutation Cancel($id: ID!) { cancelOrder(id: $id, reason: "cancelled in the storefront") { id status } }`, {
      id: state.live.id,
    });
  } catch (error) {
    failed(error);
  }
}

// --- Past orders --------------------------------------------------------------------------------

async function loadOrders({ more = false } = {}) {
  if (!state.token) return;
  let data;
  try {
    data = await graphql(
      `query Orders($after: String) { orders(first: 10, after: $after) { edges { node { ${ORDER_FIELDS} } } pageInfo { endCursor hasNextPage } } }`,
      { after: more ? state.ordersCursor : null },
    );
  } catch (error) {
    return failed(error);
  }
  const page = data.orders;
  if (!page) return;
  const list = $('order-list');
  if (!more) list.replaceChildren();
  for (const { node: order } of page.edges) list.append(orderRow(newerOf(order, state.live?.order)));
  state.ordersCursor = page.pageInfo.endCursor;
  $('more-orders').hidden = !page.pageInfo.hasNextPage;
  $('orders-empty').hidden = list.children.length > 0;
}

/** The later state of one order of two (a page may be read before a status event lands). */
function newerOf(order, other) {
  const steps = (o) => o.history.length + (o.shipment?.history.length ?? 0);
  return other?.id === order.id && steps(other) > steps(order) ? other : order;
}

function orderRow(order) {
  return el(
    'li',
    { class: 'order', dataset: { orderId: order.id } },
    el('span', { class: `status ${order.status.toLowerCase()}` }, order.status),
    order.shipment && order.shipment.status !== 'CANCELLED'
      ? el('span', { class: `status shipment ${order.shipment.status.toLowerCase()}` }, order.shipment.status)
      : null,
    el('span', {}, ` #${order.id.slice(0, 8).toUpperCase()} · ${new Date(order.createdAt).toLocaleString()}`),
    el('span', { class: 'muted' }, ` · ${order.lines.map((l) => `${l.quantity} × ${l.name}`).join(', ')}`),
    el('strong', {}, ` ${money(order.total)}`),
    el('button', { type: 'button', className: 'link', textContent: 'Watch', onclick: () => watchOrder(order) }),
  );
}

// --- Session ------------------------------------------------------------------------------------

function signIn({ token, customer }) {
  state.token = token;
  localStorage.setItem(TOKEN_KEY, token);
  showSession(customer);
}

function showSession(customer) {
  state.me = customer;
  $('whoami').textContent = customer ? `Signed in as ${customer.name} (${customer.email})` : 'Not signed in';
  $('logout').hidden = !customer;
  $('auth').hidden = Boolean(customer);
  $('orders').hidden = !customer;
  if (customer) void loadOrders();
}

function signOut(message) {
  state.token = null;
  localStorage.removeItem(TOKEN_KEY);
  stopWatching();
  $('live').hidden = true;
  showSession(null);
  if (message) flash(message, 'warn');
}

async function submitAuth(event, mutation, fields) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const variables = Object.fromEntries(fields.map((name) => [name, form.elements[name].value.trim()]));
    if (variables.password !== undefined) variables.password = form.elements.password.value;
    const data = await graphql(
      `mutation Auth(${fields.map((f) => `$${f}: String!`).join(', ')}) {
        ${mutation}(${fields.map((f) => `${f}: $${f}`).join(', ')}) { token customer { id email name role } }
      }`,
      variables,
    );
    signIn(data[mutation]);
    form.reset();
    flash(`Welcome, ${data[mutation].customer.name}.`);
  } catch (error) {
    failed(error);
  } finally {
    button.disabled = false;
  }
}

function selectTab(register) {
  $('tab-login').setAttribute('aria-selected', String(!register));
  $('tab-register').setAttribute('aria-selected', String(register));
  $('login-form').hidden = register;
  $('register-form').hidden = !register;
}

// --- Start --------------------------------------------------------------------------------------

async function start() {
  $('tab-login').addEventListener('click', () => selectTab(false));
  $('tab-register').addEventListener('click', () => selectTab(true));
  $('login-form').addEventListener('submit', (e) => submitAuth(e, 'login', ['email', 'password']));
  $('register-form').addEventListener('submit', (e) => submitAuth(e, 'register', ['name', 'email', 'password']));
  $('logout').addEventListener('click', () => signOut());
  $('checkout-form').addEventListener('submit', placeOrder);
  $('cancel-order').addEventListener('click', cancelLiveOrder);
  $('refresh-orders').addEventListener('click', () => loadOrders());
  $('more-orders').addEventListener('click', () => loadOrders({ more: true }));
  $('more-products').addEventListener('click', () => loadProducts({ more: true }).catch(failed));
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.search = $('search').value.trim();
    loadProducts().catch(failed);
  });

  renderCart();
  if (state.token) {
    try {
      const data = await graphql('{ me { id email name role } }');
      showSession(data.me);
    } catch {
      signOut();
    }
  } else {
    showSession(null);
  }
  await loadProducts().catch(failed);
  document.body.dataset.ready = 'true';
}

void start();
