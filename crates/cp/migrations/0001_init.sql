-- Wrenn control plane schema. Every table the control plane uses; ids are prefixed text
-- (`usr-…`, `team-…`, `key-…`, `host-…`, `tpl-…`, `sb-…`) so logs and URLs read well.

-- Cluster-wide settings shared by every control-plane replica (e.g. the JWT signing key).
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- NULL for accounts that only sign in through OAuth.
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    github_id     BIGINT UNIQUE,
    -- The team a fresh login lands in.
    default_team_id TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);

CREATE TABLE team_members (
    team_id    TEXT NOT NULL REFERENCES teams (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    team_id      TEXT NOT NULL REFERENCES teams (id),
    created_by   TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    -- The first characters of the key, shown so people can tell keys apart.
    prefix       TEXT NOT NULL,
    -- SHA-256 of the whole key, hex. The key itself is never stored.
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_keys_team ON api_keys (team_id);

CREATE TABLE hosts (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    address      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('ready', 'unreachable', 'draining')),
    accelerator  TEXT NOT NULL DEFAULT '',
    cpus         INTEGER NOT NULL DEFAULT 0,
    memory_mb    BIGINT NOT NULL DEFAULT 0,
    agent_version TEXT NOT NULL DEFAULT '',
    last_seen_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    -- NULL: a platform template, visible to every team.
    team_id     TEXT REFERENCES teams (id),
    name        TEXT NOT NULL,
    -- The template's name on its host agent (team templates get a collision-free one).
    agent_name  TEXT NOT NULL,
    host_id     TEXT REFERENCES hosts (id),
    snapshot    BOOLEAN NOT NULL,
    vcpus       INTEGER NOT NULL DEFAULT 0,
    memory_mb   INTEGER NOT NULL DEFAULT 0,
    disk_mb     INTEGER NOT NULL DEFAULT 0,
    source_sandbox_id TEXT,
    created_by  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX templates_team_name ON templates (coalesce(team_id, ''), name)
    WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX templates_agent_name ON templates (agent_name) WHERE deleted_at IS NULL;

CREATE TABLE sandboxes (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id),
    host_id     TEXT REFERENCES hosts (id),
    template_id TEXT NOT NULL REFERENCES templates (id),
    template    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'running', 'paused', 'stopped', 'error', 'missing')),
    vcpus       INTEGER NOT NULL,
    memory_mb   INTEGER NOT NULL,
    disk_mb     INTEGER NOT NULL,
    timeout_sec INTEGER NOT NULL,
    internet    BOOLEAN NOT NULL,
    metadata    JSONB NOT NULL DEFAULT '{}',
    error       TEXT,
    boot_ms     BIGINT,
    auto_paused BOOLEAN NOT NULL DEFAULT FALSE,
    created_by_user TEXT,
    created_by_api_key TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at  TIMESTAMPTZ
);
CREATE INDEX sandboxes_team_created ON sandboxes (team_id, created_at DESC, id DESC);
CREATE INDEX sandboxes_host_state ON sandboxes (host_id, state);
CREATE INDEX sandboxes_metadata ON sandboxes USING gin (metadata jsonb_path_ops);

-- Samples the agent flushed on pause and destroy, for the metrics of sandboxes not running.
CREATE TABLE sandbox_metrics (
    sandbox_id  TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL,
    cpu_percent REAL NOT NULL,
    rss_bytes   BIGINT NOT NULL,
    pss_bytes   BIGINT NOT NULL,
    disk_bytes  BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, at)
);

CREATE TABLE audit_logs (
    id            BIGSERIAL PRIMARY KEY,
    team_id       TEXT,
    actor_type    TEXT NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system')),
    actor_id      TEXT,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    action        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('success', 'failure')),
    metadata      JSONB NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_team_id ON audit_logs (team_id, id DESC);

-- OAuth `state` values in flight; expired rows are ignored and swept.
CREATE TABLE oauth_states (
    state      TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
