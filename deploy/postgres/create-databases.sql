-- Runs once, when the PostgreSQL volume is first initialised (/docker-entrypoint-initdb.d):
-- one database per service. Each service's `migrate` creates its tables (and would create
-- its database too; creating them here keeps the first start independent of that).
CREATE DATABASE tessera_auth;
CREATE DATABASE tessera_users;
CREATE DATABASE tessera_orders;
