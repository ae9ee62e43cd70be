//! Echelon application layer: the use cases that route and execute requests over the domain model.
