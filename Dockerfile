# One image for every process of the shop: the services and the BFF are
# TypeScript files that Node 24 runs directly (type stripping), so there is no
# build step; the image's own Node is 24, so the `node` dev dependency that
# brings Node 24 to developer machines is not needed here, and
# `npm ci --omit=dev` installs only what runs in production.
#
# Each compose service picks its program with its command, e.g.
#   node services/order/main.ts      node bff/main.ts
# Without one, the image runs the whole shop in one container (scripts/start.ts).
ARG NODE_VERSION=24
FROM node:${NODE_VERSION}-slim

# Logs are JSON lines on stdout, whatever the terminal.
ENV NODE_ENV=production \
    LOG_FORMAT=json \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_AUDIT=false

WORKDIR /app

# Dependencies first, so that a change to the code does not reinstall them.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force

# The code (.dockerignore keeps out tests, node_modules, git and local files).
COPY . .

# The kit creates each service's database and runs its migrations at start;
# nothing here needs to write to /app.
USER node

CMD ["node", "scripts/start.ts"]
