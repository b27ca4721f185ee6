// The BFF's settings, read from the environment once at start (loadConfig);
// those an operator may change while it runs (rate limit, RPC client, log
// level) are live settings in the `config` bucket (subjects/settings.ts).
import { Type, type Static, type TObject } from '@sinclair/typebox';
import { settings, settingVariables } from '../subjects/index.ts';
import { ServiceSettings } from '../services/kit/index.ts';
import { TTL_PATTERN } from './plugins/auth.ts';

// The BFF has no database: the kit's settings without DATABASE_URL.
const { DATABASE_URL: _noDatabase, ...natsSettings } = ServiceSettings;

export const BffSettings = {
  ...natsSettings,
  BFF_PORT: Type.Integer({ minimum: 0, maximum: 65_535, default: 4000, description: 'HTTP port of the API and storefront.' }),
  BFF_HOST: Type.String({ minLength: 1, default: 'localhost', description: 'Address to listen on; 0.0.0.0 or :: for all.' }),
  JWT_SECRET: Type.String({ minLength: 32, description: 'HS256 signing secret, at least 32 characters. Required.' }),
  JWT_TTL: Type.String({ pattern: TTL_PATTERN, default: '1h', description: 'Token lifetime: seconds, or 15m, 1h, 7d.' }),
  // RATE_LIMIT_MAX and RATE_LIMIT_WINDOW_MS: declared once, by their live settings.
  ...settingVariables(settings.bff.rateLimitMax, settings.bff.rateLimitWindowMs),
  GRAPHQL_DEV: Type.Boolean({ default: false, description: 'Serve GraphiQL at /graphiql and allow introspection.' }),
  DEV_MAIL_DIR: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'Folder of the emails npm start caught (no SMTP server answered), shown at /dev/mail; unset, no such page.',
    }),
  ),
  GRAPHQL_DEPTH_LIMIT: Type.Integer({ minimum: 2, maximum: 50, default: 8, description: 'Deepest query accepted.' }),
  GRAPHQL_MAX_FIELDS: Type.Integer({
    minimum: 10,
    maximum: 10_000,
    default: 300,
    description: 'Most fields (aliases and fragments counted) one operation may select.',
  }),
};
export type BffConfig = Static<TObject<typeof BffSettings>>;
