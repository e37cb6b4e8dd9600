//! gRPC contracts of the tessera services, generated from the `.proto` files in `proto/`.
//!
//! Each package is exposed under its proto name, e.g. `tessera_proto::users::v1::UserService`
//! client and server. [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection, and [`convert`]
//! is the one translation between these messages and the shared domain types; [`callers`]
//! says who may call each method.

pub mod callers;
pub mod convert;

/// `tessera.auth.v1`: tokens and identities.
pub mod auth {
    #[allow(missing_docs, clippy::all, clippy::pedantic)] // generated code
    pub mod v1 {
        tonic::include_proto!("tessera.auth.v1");
    }
}

/// `tessera.users.v1`: profiles.
pub mod users {
    #[allow(missing_docs, clippy::all, clippy::pedantic)] // generated code
    pub mod v1 {
        tonic::include_proto!("tessera.users.v1");
    }
}

/// `tessera.orders.v1`: orders.
pub mod orders {
    #[allow(missing_docs, clippy::all, clippy::pedantic)] // generated code
    pub mod v1 {
        tonic::include_proto!("tessera.orders.v1");
    }
}

/// The encoded descriptors of every tessera proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tessera_descriptor");
