-- Run by the postgres image once, on the first start with an empty data volume (it runs the
-- files in /docker-entrypoint-initdb.d as POSTGRES_USER). The tracking data lives in the
-- database POSTGRES_DB (mlflow); MLflow's basic-auth app keeps users and permissions in a
-- database of its own, created here.
CREATE DATABASE mlflow_auth;
