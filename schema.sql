-- msgapi's PostgreSQL schema, for operators who create tables by hand.
-- The service creates the same tables itself on first start (CREATE TABLE IF NOT EXISTS);
-- tests/test_schema.py proves this file and the models agree.
-- Timestamps are UTC without a zone; the API renders them as RFC 3339 with a Z.
-- Ids come from sequences (SERIAL), which never hand out an id twice, even after the
-- newest row is deleted: a deleted user's unexpired token can never name someone else.

BEGIN;

-- Trigram indexes for search (ILIKE '%...%'). Needs a superuser, or a user with CREATE on
-- the database (pg_trgm is a trusted extension).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE IF NOT EXISTS users (
    id            SERIAL PRIMARY KEY,
    username      VARCHAR(150) NOT NULL,
    -- the username case-folded: two names that differ only in case are one name
    username_key  VARCHAR(150) NOT NULL,
    password      VARCHAR(255) NOT NULL,  -- pbkdf2_sha256$<iterations>$<salt>$<hash>, as Django
    email         VARCHAR(254) NOT NULL,
    first_name    VARCHAR(150) NOT NULL,
    last_name     VARCHAR(150) NOT NULL,
    is_staff      BOOLEAN NOT NULL,
    is_active     BOOLEAN NOT NULL,
    token_version INTEGER NOT NULL,       -- bumped to end every token already issued
    date_joined   TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_username_key ON users (username_key);

CREATE TABLE IF NOT EXISTS messages (
    id         SERIAL PRIMARY KEY,
    content    VARCHAR(160) NOT NULL CHECK (length(content) BETWEEN 1 AND 160),
    views      INTEGER NOT NULL DEFAULT 0 CHECK (views >= 0),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    author_id  INTEGER REFERENCES users (id) ON DELETE SET NULL
);
-- the list's orders: keyset pages walk these forwards or backwards
CREATE INDEX IF NOT EXISTS messages_updated_at_id ON messages (updated_at, id);
CREATE INDEX IF NOT EXISTS messages_created_at_id ON messages (created_at, id);
-- ordering=views; every GET changes views, so each view also writes this index
CREATE INDEX IF NOT EXISTS messages_views_id ON messages (views, id);
-- ?author= in the default order; also serves the foreign key (replaces messages_author_id)
CREATE INDEX IF NOT EXISTS messages_author_id_updated_at_id ON messages (author_id, updated_at, id);
DROP INDEX IF EXISTS messages_author_id;
-- search: case-insensitive substring of content, for 3 or more characters
CREATE INDEX IF NOT EXISTS messages_content_trgm ON messages USING gin (content gin_trgm_ops);

-- Auth rate limiting, shared by every app process: hits per bucket and time window.
CREATE TABLE IF NOT EXISTS rate_limit_hits (
    bucket       VARCHAR(200) NOT NULL,  -- e.g. token:ip:203.0.113.7, token:user:alice
    window_start BIGINT NOT NULL,        -- Unix time the window starts
    hits         INTEGER NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX IF NOT EXISTS rate_limit_hits_window_start ON rate_limit_hits (window_start);

-- Refresh tokens that may not be used again (logged out, or spent by rotation),
-- kept until they would have expired anyway.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        VARCHAR(64) PRIMARY KEY,
    family     VARCHAR(64) NOT NULL,   -- the login this token descends from
    reason     VARCHAR(16) NOT NULL,   -- logout or rotated
    expires_at BIGINT NOT NULL         -- Unix time
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- Token families revoked because a spent refresh token was presented again.
CREATE TABLE IF NOT EXISTS revoked_families (
    family     VARCHAR(64) PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_families_expires_at ON revoked_families (expires_at);

-- Idempotency-Key of message creates, per user: claimed while the message is written, then
-- the first answer, replayed to retries; kept IDEMPOTENCY_KEY_TTL seconds.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         VARCHAR(255) NOT NULL,
    fingerprint VARCHAR(64) NOT NULL,   -- SHA-256 of the request's content
    claim       VARCHAR(32) NOT NULL,   -- the request creating it now
    created_at  BIGINT NOT NULL,        -- Unix time it was claimed (or taken over)
    message_id  INTEGER,                -- null while in flight; no foreign key: the answer outlives the message
    response    TEXT,                   -- the 201's body
    etag        VARCHAR(32),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);

COMMIT;
