//! The release manifest (a TUF target): what a release is and how to install it.
