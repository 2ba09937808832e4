//! The job that carries a booking request from the api to the worker through Redis.
//!
//! The request itself is stored in PostgreSQL before the job is queued; the job only names
//! it, so a lost or repeated job can never change what was asked for.

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingJob {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub request_id: Uuid,
}

pub type BookingQueue = RedisStorage<BookingJob>;

/// Builds the queue handle both binaries use, with heartbeats short enough that a killed
/// worker's jobs are recovered in seconds.
pub fn booking_queue(
    conn: ConnectionManager,
    queue_name: &str,
    heartbeat_interval: Duration,
) -> BookingQueue {
    let config = apalis_redis::Config::default()
        .queue(queue_name)
        .heartbeat_interval(heartbeat_interval)
        .missed_heartbeats(3)
        .batch_size(32);
    RedisStorage::new(conn).with_config(config)
}

/// The task id is the request id, so pushing the same request twice queues it once.
pub fn task_id(request_id: Uuid) -> TaskId {
    TaskId::from_ulid(ulid::Ulid::from(request_id.as_u128()))
}

pub type EnqueueError = apalis::prelude::TaskSinkError<apalis_redis::Error>;

pub async fn enqueue(queue: &mut BookingQueue, job: BookingJob) -> Result<(), EnqueueError> {
    let task_id = task_id(job.request_id);
    queue
        .push_task(TaskBuilder::new(job).task_id(task_id).build())
        .await
}

/// Connects to Redis with a response timeout long enough that one slow reply does not
/// stop a worker.
pub async fn connect_redis(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    client.get_connection_manager_with_config(config).await
}
