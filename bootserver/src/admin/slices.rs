//! Slices: sets of slivers across nodes, with keys, resources and a lease.

use config::rspec::Rspec;
use config::Timestamp;

use super::{Admin, AdminError};
use crate::model::{Slice, SliceName, SshPublicKey};
use crate::registry::{self, NodeRef};

/// When a slice's lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// At this time.
    At(Timestamp),
    /// This many days from now.
    DaysFromNow(u32),
}

impl LeaseEnd {
    /// The end as a time, counting from `now`.
    pub fn at(self, now: Timestamp) -> Timestamp {
        match self {
            LeaseEnd::At(end) => end,
            LeaseEnd::DaysFromNow(days) => now.saturating_add_secs(i64::from(days) * 86_400),
        }
    }
}

/// A slice to create.
#[derive(Debug, Clone)]
pub struct SliceSpec {
    /// Its name, `site_slice`.
    pub name: SliceName,
    /// Free text shown in listings.
    pub description: String,
    /// Its resources.
    pub rspec: Rspec,
    /// A script run once inside each new sliver.
    pub initscript: Option<String>,
    /// When its lease ends.
    pub lease: LeaseEnd,
}

/// Whether one node's membership in a slice changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceMembership {
    /// The node's full host name.
    pub node: String,
    /// `false` when it already was (or was not) in the slice.
    pub changed: bool,
}

impl Admin {
    /// Creates a slice.
    pub fn create_slice(&self, spec: &SliceSpec) -> Result<Slice, AdminError> {
        let now = Timestamp::now();
        self.write(|c| {
            Ok(registry::create_slice(
                c,
                &spec.name,
                &spec.description,
                &spec.rspec,
                spec.initscript.as_deref(),
                spec.lease.at(now),
                now,
            )?)
        })
    }

    /// Deletes a slice; its slivers go at the nodes' next poll.
    pub fn delete_slice(&self, name: &SliceName) -> Result<(), AdminError> {
        self.write(|c| Ok(registry::delete_slice(c, name)?))
    }

    /// Assigns nodes to the slice (all or none of them).
    pub fn add_nodes_to_slice(
        &self,
        name: &SliceName,
        nodes: &[NodeRef],
    ) -> Result<Vec<SliceMembership>, AdminError> {
        self.change_membership(name, nodes, registry::slice_add_node)
    }

    /// Takes nodes out of the slice (all or none of them).
    pub fn remove_nodes_from_slice(
        &self,
        name: &SliceName,
        nodes: &[NodeRef],
    ) -> Result<Vec<SliceMembership>, AdminError> {
        self.change_membership(name, nodes, registry::slice_remove_node)
    }

    fn change_membership(
        &self,
        name: &SliceName,
        nodes: &[NodeRef],
        change: fn(
            &rusqlite::Connection,
            &SliceName,
            &crate::model::Node,
        ) -> registry::Result<bool>,
    ) -> Result<Vec<SliceMembership>, AdminError> {
        self.write(|c| {
            nodes
                .iter()
                .map(|node| {
                    let node = registry::resolve_node(c, node)?;
                    let changed = change(c, name, &node)?;
                    Ok(SliceMembership {
                        node: node.fqdn,
                        changed,
                    })
                })
                .collect()
        })
    }

    /// Adds ssh public keys for the slice's users; returns how many were new.
    pub fn add_slice_keys(
        &self,
        name: &SliceName,
        keys: &[SshPublicKey],
    ) -> Result<usize, AdminError> {
        self.change_keys(name, keys, registry::slice_add_key)
    }

    /// Removes ssh public keys; returns how many were there.
    pub fn remove_slice_keys(
        &self,
        name: &SliceName,
        keys: &[SshPublicKey],
    ) -> Result<usize, AdminError> {
        self.change_keys(name, keys, registry::slice_remove_key)
    }

    fn change_keys(
        &self,
        name: &SliceName,
        keys: &[SshPublicKey],
        change: fn(&rusqlite::Connection, &SliceName, &SshPublicKey) -> registry::Result<bool>,
    ) -> Result<usize, AdminError> {
        self.write(|c| {
            let mut changed = 0;
            for key in keys {
                changed += usize::from(change(c, name, key)?);
            }
            Ok(changed)
        })
    }

    /// Replaces the slice's resources; a `lease_end` in `rspec` renews the lease.
    pub fn set_rspec(&self, name: &SliceName, rspec: &Rspec) -> Result<(), AdminError> {
        self.write(|c| Ok(registry::slice_set_rspec(c, name, rspec)?))
    }

    /// Replaces the slice's init script, or removes it with `None`.
    pub fn set_initscript(&self, name: &SliceName, script: Option<&str>) -> Result<(), AdminError> {
        self.write(|c| Ok(registry::slice_set_initscript(c, name, script)?))
    }

    /// Moves the slice's lease end; returns the new end.
    pub fn renew(&self, name: &SliceName, lease: LeaseEnd) -> Result<Timestamp, AdminError> {
        let now = Timestamp::now();
        let until = lease.at(now);
        self.write(|c| Ok(registry::slice_renew(c, name, until, now)?))?;
        Ok(until)
    }

    /// Every slice, by name.
    pub fn list_slices(&self) -> Result<Vec<Slice>, AdminError> {
        self.read(|c| Ok(registry::list_slices(c)?))
    }

    /// One slice, with its keys and nodes.
    pub fn show_slice(&self, name: &SliceName) -> Result<Slice, AdminError> {
        self.read(|c| Ok(registry::get_slice(c, name)?))
    }
}
