-- Run once, when the PostgreSQL volume is first initialised: one role and one database per
-- service, as in production. DEVELOPMENT ONLY passwords (the same as in kustomization.yaml).
CREATE ROLE auth LOGIN PASSWORD 'auth-dev-password';
CREATE DATABASE tessera_auth OWNER auth;
CREATE ROLE users LOGIN PASSWORD 'users-dev-password';
CREATE DATABASE tessera_users OWNER users;
CREATE ROLE orders LOGIN PASSWORD 'orders-dev-password';
CREATE DATABASE tessera_orders OWNER orders;
