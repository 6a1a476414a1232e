"""Shared foundations of every app: database access from async code, the ApplicationError family, HTTP
middleware. Imports no app of the project."""
