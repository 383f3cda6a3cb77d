//! The errors the engine answers with, each named after the AWS exception it becomes.

/// An AWS exception type the engine can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ResourceNotFound,
    ResourceInUse,
    InvalidArgument,
    LimitExceeded,
    ExpiredIterator,
    ExpiredNextToken,
    Validation,
    DryRunOperation,
    ProvisionedThroughputExceeded,
    InternalFailure,
    KmsNotFound,
    KmsDisabled,
    KmsInvalidState,
    KmsAccessDenied,
}

impl ErrorKind {
    /// The exception name as AWS writes it in `__type`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::ResourceInUse => "ResourceInUseException",
            ErrorKind::InvalidArgument => "InvalidArgumentException",
            ErrorKind::LimitExceeded => "LimitExceededException",
            ErrorKind::ExpiredIterator => "ExpiredIteratorException",
            ErrorKind::ExpiredNextToken => "ExpiredNextTokenException",
            ErrorKind::Validation => "ValidationException",
            ErrorKind::DryRunOperation => "DryRunOperationException",
            ErrorKind::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            ErrorKind::InternalFailure => "InternalFailure",
            ErrorKind::KmsNotFound => "KMSNotFoundException",
            ErrorKind::KmsDisabled => "KMSDisabledException",
            ErrorKind::KmsInvalidState => "KMSInvalidStateException",
            ErrorKind::KmsAccessDenied => "KMSAccessDeniedException",
        }
    }
}

/// An error with the exact message a client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceNotFound, message)
    }
    pub fn in_use(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceInUse, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InternalFailure, message)
    }
}

impl From<rivulet_log::LogError> for ApiError {
    fn from(error: rivulet_log::LogError) -> Self {
        tracing::error!(%error, "storage error");
        match error {
            // The read that meets damaged data says so (and where), so the operator can act;
            // the records before and after it stay readable.
            rivulet_log::LogError::Corrupt { .. } => {
                ApiError::internal(format!("Internal Service Failure: {error}"))
            }
            // An encrypted batch whose data key cannot be unwrapped (its KMS key is gone).
            rivulet_log::LogError::KeyUnavailable { .. } => ApiError::new(
                ErrorKind::KmsAccessDenied,
                "The ciphertext references a key that doesn't exist or that you don't have \
                 access to.",
            ),
            _ => ApiError::internal("Internal Service Failure"),
        }
    }
}

/// Engine results.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
