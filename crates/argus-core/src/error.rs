//! The Custom Vision error model: every official `CustomVisionErrorCodes` value and [`ApiError`], the error
//! every service returns. The HTTP layer (`argus-server`) alone decides which status carries each code and
//! turns an [`ApiError`] into the official body `{"code": "...", "message": "..."}`.

use std::fmt;

macro_rules! error_codes {
    ($($code:ident,)*) => {
        /// Every value of the official `CustomVisionErrorCodes` enum (Training v3.3 / Prediction v3.1).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum ErrorCode { $($code,)* }

        impl ErrorCode {
            /// Every code, in the order of the specification.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code,)*];

            /// The code's wire name, exactly as in the specification.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$code => stringify!($code),)* }
            }
        }
    };
}

error_codes! {
    NoError,
    BadRequest,
    BadRequestExceededBatchSize,
    BadRequestNotSupported,
    BadRequestInvalidIds,
    BadRequestProjectName,
    BadRequestProjectNameNotUnique,
    BadRequestProjectDescription,
    BadRequestProjectUnknownDomain,
    BadRequestProjectUnknownClassification,
    BadRequestProjectUnsupportedDomainTypeChange,
    BadRequestProjectUnsupportedExportPlatform,
    BadRequestProjectImagePreprocessingSettings,
    BadRequestProjectDuplicated,
    BadRequestIterationName,
    BadRequestIterationNameNotUnique,
    BadRequestIterationDescription,
    BadRequestIterationIsNotTrained,
    BadRequestIterationValidationFailed,
    BadRequestWorkspaceCannotBeModified,
    BadRequestWorkspaceNotDeletable,
    BadRequestTagName,
    BadRequestTagNameNotUnique,
    BadRequestTagDescription,
    BadRequestTagType,
    BadRequestMultipleNegativeTag,
    BadRequestMultipleGeneralProductTag,
    BadRequestImageTags,
    BadRequestImageRegions,
    BadRequestNegativeAndRegularTagOnSameImage,
    BadRequestUnsupportedDomain,
    BadRequestRequiredParamIsNull,
    BadRequestIterationIsPublished,
    BadRequestInvalidPublishName,
    BadRequestInvalidPublishTarget,
    BadRequestUnpublishFailed,
    BadRequestIterationNotPublished,
    BadRequestSubscriptionApi,
    BadRequestExceedProjectLimit,
    BadRequestExceedIterationPerProjectLimit,
    BadRequestExceedTagPerProjectLimit,
    BadRequestExceedTagPerImageLimit,
    BadRequestExceededQuota,
    BadRequestCannotMigrateProjectWithName,
    BadRequestNotLimitedTrial,
    BadRequestImageBatch,
    BadRequestImageStream,
    BadRequestImageUrl,
    BadRequestImageFormat,
    BadRequestImageSizeBytes,
    BadRequestImageDimensions,
    BadRequestImageExceededCount,
    BadRequestTrainingNotNeeded,
    BadRequestTrainingNotNeededButTrainingPipelineUpdated,
    BadRequestTrainingValidationFailed,
    BadRequestClassificationTrainingValidationFailed,
    BadRequestMultiClassClassificationTrainingValidationFailed,
    BadRequestMultiLabelClassificationTrainingValidationFailed,
    BadRequestDetectionTrainingValidationFailed,
    BadRequestTrainingAlreadyInProgress,
    BadRequestDetectionTrainingNotAllowNegativeTag,
    BadRequestInvalidEmailAddress,
    BadRequestDomainNotSupportedForAdvancedTraining,
    BadRequestExportPlatformNotSupportedForAdvancedTraining,
    BadRequestReservedBudgetInHoursNotEnoughForAdvancedTraining,
    BadRequestExportValidationFailed,
    BadRequestExportAlreadyInProgress,
    BadRequestPredictionIdsMissing,
    BadRequestPredictionIdsExceededCount,
    BadRequestPredictionTagsExceededCount,
    BadRequestPredictionResultsExceededCount,
    BadRequestPredictionInvalidApplicationName,
    BadRequestPredictionInvalidQueryParameters,
    BadRequestInvalidImportToken,
    BadRequestExportWhileTraining,
    BadRequestImageMetadataKey,
    BadRequestImageMetadataValue,
    BadRequestOperationNotSupported,
    BadRequestInvalidArtifactUri,
    BadRequestCustomerManagedKeyRevoked,
    BadRequestInvalid,
    UnsupportedMediaType,
    Forbidden,
    ForbiddenUser,
    ForbiddenUserResource,
    ForbiddenUserSignupDisabled,
    ForbiddenUserSignupAllowanceExceeded,
    ForbiddenUserDoesNotExist,
    ForbiddenUserDisabled,
    ForbiddenUserInsufficientCapability,
    ForbiddenDRModeEnabled,
    ForbiddenInvalid,
    NotFound,
    NotFoundProject,
    NotFoundProjectDefaultIteration,
    NotFoundIteration,
    NotFoundIterationPerformance,
    NotFoundTag,
    NotFoundImage,
    NotFoundDomain,
    NotFoundApimSubscription,
    NotFoundInvalid,
    Conflict,
    ConflictInvalid,
    ErrorUnknown,
    ErrorIterationCopyFailed,
    ErrorPreparePerformanceMigrationFailed,
    ErrorProjectInvalidWorkspace,
    ErrorProjectInvalidPipelineConfiguration,
    ErrorProjectInvalidDomain,
    ErrorProjectTrainingRequestFailed,
    ErrorProjectImportRequestFailed,
    ErrorProjectExportRequestFailed,
    ErrorFeaturizationServiceUnavailable,
    ErrorFeaturizationQueueTimeout,
    ErrorFeaturizationInvalidFeaturizer,
    ErrorFeaturizationAugmentationUnavailable,
    ErrorFeaturizationUnrecognizedJob,
    ErrorFeaturizationAugmentationError,
    ErrorExporterInvalidPlatform,
    ErrorExporterInvalidFeaturizer,
    ErrorExporterInvalidClassifier,
    ErrorPredictionServiceUnavailable,
    ErrorPredictionModelNotFound,
    ErrorPredictionModelNotCached,
    ErrorPrediction,
    ErrorPredictionStorage,
    ErrorRegionProposal,
    ErrorUnknownBaseModel,
    ErrorInvalid,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed request: an official code and a human message. Which HTTP status carries it is the HTTP layer's
/// business (`argus_server::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The official error code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with an official code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// `BadRequest` with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// An internal failure (`ErrorUnknown`, 500). The detail is logged, not sent.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::ErrorUnknown, "An internal error occurred; see the server log.")
    }
}

/// Result alias for services.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_official_code_is_present() {
        assert_eq!(ErrorCode::ALL.len(), 130);
        assert_eq!(ErrorCode::BadRequestImageFormat.as_str(), "BadRequestImageFormat");
    }
}
