"""Content-based routing: route files, CEL expressions, the routing slip and the step kinds."""
