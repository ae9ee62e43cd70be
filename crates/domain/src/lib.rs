//! Echelon domain: the model of pools, instances, echelons and their rules, free of I/O and runtimes.
