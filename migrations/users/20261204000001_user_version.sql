-- A profile's version: 1 at creation, one more per change. Updates of one row are
-- serialised by its lock, so versions follow commit order (unlike `updated_at`, stamped at
-- transaction start); `user.updated` carries it and consumers keep the highest they saw.
ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 1;
