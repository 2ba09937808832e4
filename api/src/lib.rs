//! The HTTP ingress: resolves the tenant, rate-limits, validates, stores and queues booking
//! requests, and answers their status.

pub mod admin;
pub mod audit;
pub mod backpressure;
pub mod client_ip;
pub mod cors;
pub mod credentials;
pub mod json;
pub mod problem;
pub mod query;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod tenant;
pub mod trusted_host;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use common::config::Config;
use common::jobs::BookingQueue;
use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::problem::Problem;
use crate::rate_limit::{RateLimits, RouteClass};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub queue: BookingQueue,
    pub limits: Arc<RateLimits>,
    pub metrics: PrometheusHandle,
    pub queue_depth: Arc<backpressure::QueueDepth>,
}

impl AppState {
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let pool = common::db::connect(&config.database_url, 32)
            .await
            .context("connecting to PostgreSQL")?;
        let redis = common::jobs::connect_redis(&config.redis_url)
            .await
            .context("connecting to Redis")?;
        let queue = common::jobs::booking_queue(
            redis.clone(),
            &config.queue_name,
            config.heartbeat_interval,
        );
        let limits = RateLimits::from_config(&config);
        limits.spawn_sweeper();
        Ok(Self {
            config: Arc::new(config),
            pool,
            redis,
            queue,
            limits,
            metrics: common::telemetry::install_recorder(),
            queue_depth: Arc::default(),
        })
    }
}

/// One path the api serves: the methods it answers there, with their handlers, and the
/// rate-limit class enforced on it by a `route_layer` (admin paths have none here: they are
/// limited before routing, see [`app`]). Each method is declared once, in [`Route::on`],
/// which both routes it and records it, so [`route_table`] is the one list of what is served.
pub struct Route {
    pub path: &'static str,
    /// The methods declared for the path. axum answers `HEAD` wherever `GET` is declared.
    pub methods: Vec<Method>,
    pub class: Option<RouteClass>,
    handlers: MethodRouter<AppState>,
}

impl Route {
    pub fn new(path: &'static str) -> Self {
        Self {
            path,
            methods: Vec::new(),
            class: None,
            handlers: MethodRouter::new(),
        }
    }

    /// Rate-limits every method of the path under `class`.
    pub fn limited(self, class: RouteClass) -> Self {
        Self {
            class: Some(class),
            ..self
        }
    }

    /// Answers `method` with `handler`.
    #[track_caller]
    pub fn on<H, T>(mut self, method: Method, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
        self.handlers = self.handlers.on(filter, handler);
        self.methods.push(method);
        self
    }
}

/// Every route the api serves: the tenant's public routes, the admin routes and the
/// operational ones. [`router`] is built from this table and nothing else, so a route added
/// anywhere else would not be served.
pub fn route_table() -> Vec<Route> {
    let mut table = vec![
        Route::new("/v1/bookings")
            .limited(RouteClass::Bookings)
            .on(Method::POST, routes::bookings::create),
        Route::new("/v1/services")
            .limited(RouteClass::Reads)
            .on(Method::GET, routes::services::list),
        Route::new("/v1/booking-requests/{id}")
            .limited(RouteClass::Reads)
            .on(Method::GET, routes::booking_requests::show),
        Route::new("/v1/availability")
            .limited(RouteClass::Reads)
            .on(Method::GET, routes::availability::show),
        Route::new("/v1/manage/{token}")
            .limited(RouteClass::Reads)
            .on(Method::GET, routes::manage::show),
        Route::new("/v1/manage/{token}/cancel")
            .limited(RouteClass::Bookings)
            .on(Method::POST, routes::manage::cancel),
        Route::new("/v1/manage/{token}/reschedule")
            .limited(RouteClass::Bookings)
            .on(Method::POST, routes::manage::reschedule),
    ];
    table.extend(admin::routes());
    table.extend([
        Route::new("/healthz").on(Method::GET, routes::health::live),
        Route::new("/readyz").on(Method::GET, routes::health::ready),
        Route::new("/metrics").on(Method::GET, routes::health::metrics),
    ]);
    table
}

/// The (method, path template) pairs the router serves, in table order; for tests that must
/// cover every route.
pub fn served_routes() -> Vec<(Method, &'static str)> {
    route_table()
        .iter()
        .flat_map(|route| {
            route
                .methods
                .iter()
                .map(move |method| (method.clone(), route.path))
        })
        .collect()
}

/// The routes of [`route_table`], with per-route middleware. Tenant resolution and the
/// security headers wrap this in [`serve`], because the `/t/{slug}` prefix must be removed
/// before routing.
pub fn router(state: AppState) -> Router {
    let limited =
        |class| middleware::from_fn_with_state((state.limits.clone(), class), rate_limit::enforce);
    route_table()
        .into_iter()
        .fold(Router::new(), |router, route| {
            let handlers = match route.class {
                Some(class) => route.handlers.route_layer(limited(class)),
                None => route.handlers,
            };
            router.route(route.path, handlers)
        })
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(middleware::map_response(problem::ensure_problem))
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(json::MAX_BODY_BYTES))
        .with_state(state)
}

/// The whole service as it is served: security headers, request id, timeout, the host
/// check, CORS, the client's address and tenant resolution around the routes.
pub fn app(
    state: AppState,
) -> impl Clone
+ tower::Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send>
+ Send {
    let resolve = middleware::from_fn_with_state(state.clone(), tenant::resolve);
    let admin_gate = middleware::from_fn_with_state(state.clone(), admin::auth::gate);
    let hosts = Arc::new(trusted_host::AllowedHosts::new(&state.config.allowed_hosts));
    let proxies = Arc::new(client_ip::TrustedProxies::new(
        &state.config.trusted_proxies,
    ));
    let cors = cors::CorsPolicy::new(&state.config.cors_origins);
    let admin_limit =
        middleware::from_fn_with_state(state.limits.clone(), rate_limit::enforce_on_admin_paths);
    let routes = router(state);
    let stack = tower::ServiceBuilder::new()
        .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(security_header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ))
        .layer(security_header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .layer(security_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(middleware::from_fn(request_id::assign))
        .layer(middleware::from_fn(time_limit))
        .layer(middleware::from_fn_with_state(hosts, trusted_host::check))
        .layer(middleware::from_fn_with_state(cors, cors::apply))
        .layer(middleware::from_fn_with_state(proxies, client_ip::resolve))
        .layer(resolve)
        .layer(admin_limit)
        .layer(admin_gate);
    stack.service(routes)
}

fn security_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

/// Requests that take longer than this are answered 408 and dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::timeout().into_response(),
    }
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    // The method is the client's to choose: only the standard ones become label values.
    let method = match request.method().as_str() {
        known @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => known,
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight.
///
/// Connections are served by hyper directly rather than `axum::serve`, so that a client
/// that never finishes its request headers is cut off after `HEADER_READ_TIMEOUT_SECONDS`
/// instead of holding a connection forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let header_read_timeout = state.config.header_read_timeout;
    let service = app(state);
    let mut connections = Builder::new(TokioExecutor::new());
    connections
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    connections.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service =
            service
                .clone()
                .map_request(move |request: Request<hyper::body::Incoming>| {
                    let mut request = request.map(axum::body::Body::new);
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                });
        let connection = connections
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after the shutdown grace period; closing them");
        }
    }
    Ok(())
}

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
