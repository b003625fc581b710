//! Trust: canonical JSON, keys and signatures, TUF metadata and the TUF client workflow.
