//! Check-ins and their hints: the boot server's signed reply may ask a
//! service to act now (`check_updates` for the updater; others later, such
//! as a node manager's `slices_changed`). A hint carries no data: the woken
//! service asks the server itself what to do, with its own authenticated
//! request. A reply whose signature does not verify for the check-in's
//! nonce is refused whole by the client ([`ServerClient`]), so a forged or
//! replayed hint wakes nothing.

use config::api::{paths, CheckinRequest, CheckinResponse, Hint, Hints};

use super::spec::ServiceSpec;
use crate::boot_server::{ServerClient, ServerError};

/// One check-in: the signed request and the verified reply.
pub fn checkin(
    server: &mut ServerClient,
    request: &CheckinRequest,
) -> Result<CheckinResponse, ServerError> {
    server.post(paths::CHECKIN, request)
}

/// The services to wake for the hints that are set: each service whose
/// `wake_on` names one, once, with the first hint that named it.
pub fn to_wake<'a>(services: &'a [ServiceSpec], hints: &Hints) -> Vec<(&'a str, Hint)> {
    services
        .iter()
        .filter_map(|s| {
            s.wake_on
                .iter()
                .find(|h| hints.has(**h))
                .map(|h| (s.name.as_str(), *h))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::supervisor::spec::SupervisorSpec;
    use std::path::Path;

    #[test]
    fn only_the_services_that_asked_are_woken() {
        let spec = SupervisorSpec::parse(
            "[[service]]\nname = \"sshd\"\ncommand = [\"x\"]\n\n\
             [[service]]\nname = \"updater\"\ncommand = [\"y\"]\nwake_on = [\"check_updates\"]\n",
            Path::new("s.toml"),
        )
        .unwrap();
        assert!(to_wake(&spec.services, &Hints::default()).is_empty());
        let on = Hints {
            check_updates: true,
            ..Hints::default()
        };
        assert_eq!(
            to_wake(&spec.services, &on),
            [("updater", Hint::CheckUpdates)]
        );
    }
}
