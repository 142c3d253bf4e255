-- deploy/multisite: the floorsync role and database on the site network's PostgreSQL (15+).
-- Run once as a superuser: psql -v password="'...'" -f create.sql
-- The replicas create the schema themselves on first start (migrations, under an advisory
-- lock: two replicas starting at once migrate once); the role owns what it creates.
CREATE ROLE floorsync LOGIN PASSWORD :password;
CREATE DATABASE floorsync OWNER floorsync ENCODING 'UTF8' TEMPLATE template0;
REVOKE CONNECT, TEMPORARY ON DATABASE floorsync FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE floorsync TO floorsync;
\connect floorsync
-- PostgreSQL 15: schema public belongs to the database owner; nobody else creates in it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
