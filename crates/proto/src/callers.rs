//! Who may call which internal gRPC method: part of the contract, like the event
//! subscriptions. Over mutual TLS a caller is the first DNS name on its certificate; each
//! service's certificate names the service (`auth`, `users`, `orders`), and `operator`
//! is a person with a tool such as grpcurl, who may read but never create.
//!
//! A method missing here is refused to every caller: a new method opens only by being
//! granted here, in review.

/// The identities allowed to call each method, as `package.Service/Method`.
pub const GRANTS: &[(&str, &[&str])] = &[
    // Registration creates the profile; nothing else may, since it sets the role.
    ("tessera.users.v1.UserService/CreateUser", &["auth"]),
    // Placing an order asks whether its caller is a live user.
    (
        "tessera.users.v1.UserService/GetUser",
        &["orders", "operator"],
    ),
    (
        "tessera.users.v1.UserService/BatchGetUsers",
        &["orders", "operator"],
    ),
    // For services that do not verify JWTs themselves; those here all do.
    ("tessera.auth.v1.AuthService/ValidateToken", &["operator"]),
    ("tessera.orders.v1.OrderService/GetOrder", &["operator"]),
    (
        "tessera.orders.v1.OrderService/ListOrdersByUser",
        &["operator"],
    ),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::Message as _;

    use super::GRANTS;

    #[test]
    fn every_method_of_every_service_is_granted_to_someone_and_nothing_else_is() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect();
        methods.sort();
        let mut granted: Vec<String> = GRANTS.iter().map(|(m, _)| (*m).to_owned()).collect();
        granted.sort();
        assert_eq!(methods, granted);
        assert!(GRANTS.iter().all(|(_, callers)| !callers.is_empty()));
    }

    #[test]
    fn only_auth_may_create_users() {
        let create = GRANTS
            .iter()
            .find(|(method, _)| method.ends_with("/CreateUser"))
            .unwrap();
        assert_eq!(create.1, ["auth"]);
    }
}
