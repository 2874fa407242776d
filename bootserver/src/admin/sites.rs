//! Sites: the institutions nodes belong to.

use config::Timestamp;

use super::{Admin, AdminError};
use crate::model::{Site, SiteName};
use crate::registry;

impl Admin {
    /// Registers a site.
    pub fn add_site(&self, name: &SiteName, description: &str) -> Result<Site, AdminError> {
        let now = Timestamp::now();
        self.write(|c| Ok(registry::add_site(c, name, description, now)?))
    }

    /// Every site, by name.
    pub fn list_sites(&self) -> Result<Vec<Site>, AdminError> {
        self.read(|c| Ok(registry::list_sites(c)?))
    }

    /// Deletes a site that has no nodes.
    pub fn delete_site(&self, name: &SiteName) -> Result<(), AdminError> {
        self.write(|c| Ok(registry::delete_site(c, name.as_str())?))
    }
}
