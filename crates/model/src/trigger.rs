//! What asked for a job (PRODUCT.md "Job": from the schedule, a manual run, the API, a workflow,
//! a webhook). Scripts see it through the `cronium.event` helper.

use crate::vocabulary;

vocabulary! {
    /// The kind of request a job was made for. A retry is the same job's next attempt, not a
    /// trigger of its own.
    pub enum Trigger ("trigger") {
        /// A tick of the event's schedule.
        Schedule = "schedule",
        /// `cronium event run` or the API's run endpoint.
        Manual = "manual",
        /// A run asked for by another system through the API.
        Api = "api",
        /// A node of a workflow run.
        Workflow = "workflow",
        /// A signed request to the event's `/hooks/NAME`.
        Webhook = "webhook",
        /// `cronium run FILE`: a try-out on this machine, without a server (and so without a
        /// job); what its script sees.
        Cli = "cli",
    }
}
