-- User profiles. Ids are chosen by the caller of CreateUser (auth uses the credential's id),
-- so a retried call cannot create a second profile.
--
-- Emails are stored normalised (trimmed, lower-cased) by the service, which makes the plain
-- unique index case-insensitive in effect. Deletes are hard: a deleted profile's personal
-- data is gone, and the `user.deleted` event tells the other services.
CREATE TABLE users (
    id           uuid        PRIMARY KEY,
    email        text        NOT NULL,
    display_name text        NOT NULL
        CONSTRAINT users_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 64),
    role         text        NOT NULL DEFAULT 'user'
        CONSTRAINT users_role_known CHECK (role IN ('user', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_key ON users (email);
