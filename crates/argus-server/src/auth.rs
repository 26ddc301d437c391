//! The one auth layer of the three API surfaces. Each route group names its [`Policy`]; the layer accepts the
//! policy's key (constant-time compared), or, when no key is presented at all, the signed-in portal's session
//! ([`crate::portal::session_allows`]: the cookie, plus the CSRF header on state-changing requests). A wrong key
//! is refused even with a session. Refusals are 401 in the surface's own error shape.

use argus_core::service::{CdfError, CdfErrorKind};
use argus_core::ErrorCode;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::HttpError;
use crate::extract::key_matches;
use crate::vision_routes::CdfResponse;
use crate::AppState;

/// Who may call a route group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The Training API: the `Training-Key` header.
    Training,
    /// The Prediction API: the `Prediction-Key` header.
    Prediction,
    /// The CDF-style vision API: `Authorization: Bearer <vision key>`.
    Vision,
}

impl Policy {
    /// The key the request presents for this policy, if any (`Some("")` for an empty or unreadable one).
    fn presented(self, headers: &HeaderMap) -> Option<&str> {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("").trim());
        match self {
            Policy::Training => header("Training-Key"),
            Policy::Prediction => header("Prediction-Key"),
            Policy::Vision => header("authorization")
                .map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or("").trim()),
        }
    }

    fn expected(self, state: &AppState) -> &str {
        match self {
            Policy::Training => &state.keys.training,
            Policy::Prediction => &state.keys.prediction,
            Policy::Vision => &state.keys.vision,
        }
    }

    /// Whether the request may go on under this policy.
    pub fn allows(self, req: &Request, state: &AppState) -> Result<(), Refused> {
        match self.presented(req.headers()) {
            Some(k) if key_matches(k, self.expected(state)) => Ok(()),
            Some(_) => Err(Refused { policy: self, wrong_key: true }),
            None if crate::portal::session_allows(req.method(), req.headers(), state) => Ok(()),
            None => Err(Refused { policy: self, wrong_key: false }),
        }
    }
}

/// A refused request: a wrong key, or none (and no session).
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    policy: Policy,
    wrong_key: bool,
}

impl IntoResponse for Refused {
    /// 401 in the surface's error shape.
    fn into_response(self) -> Response {
        let header = match self.policy {
            Policy::Training => "Training-Key",
            Policy::Prediction => "Prediction-Key",
            Policy::Vision => {
                let message = "Unauthorized: send Authorization: Bearer <key>.".to_string();
                return CdfResponse(CdfError::new(CdfErrorKind::Unauthorized, message)).into_response();
            }
        };
        let message = if self.wrong_key {
            format!("Access denied: the {header} is not valid.")
        } else {
            format!("Access denied: the {header} header is missing.")
        };
        HttpError::with_status(ErrorCode::Forbidden, StatusCode::UNAUTHORIZED, message).into_response()
    }
}

/// The middleware: `route_layer(from_fn_with_state((state, Policy::Training), auth::require))`.
pub async fn require(State((state, policy)): State<(AppState, Policy)>, req: Request, next: Next) -> Response {
    match policy.allows(&req, &state) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}
