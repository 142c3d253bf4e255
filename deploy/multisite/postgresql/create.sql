-- deploy/multisite: the floorsync role and database on the site network's PostgreSQL (15+).
-- Run once as a superuser: psql -v password="'...'" -f create.sql
-- The replicas create the schema themselves on first start (migrations, under an advisory
-- lock: two replicas starting at once migrate once); the role owns what it creates.
CREATE ROLE floorsync LOGIN PASSWORD :password;
-- Text compared by bytes (LC_COLLATE 'C': SQLite's order; the character classes stay the
-- server's): the ledger's indexes are keyed on text (stock lines, event ids), and a libc
-- collation costs ~20 % more CPU a movement (floorsync bench ledger --db, 1M stock lines).
CREATE DATABASE floorsync OWNER floorsync ENCODING 'UTF8' TEMPLATE template0 LC_COLLATE 'C';
REVOKE CONNECT, TEMPORARY ON DATABASE floorsync FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE floorsync TO floorsync;
\connect floorsync
-- PostgreSQL 15: schema public belongs to the database owner; nobody else creates in it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
