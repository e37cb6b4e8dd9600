-- The version of the last profile change applied from `user.updated`: events of a lower one
-- are stale. It replaces the profile's `updated_at`, which concurrent updates can commit out
-- of order.
ALTER TABLE credentials ADD COLUMN profile_version bigint;
ALTER TABLE credentials DROP COLUMN profile_updated_at;
