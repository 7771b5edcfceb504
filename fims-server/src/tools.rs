//! Shared pieces of the `fims_send` and `fims_listen` tools.
