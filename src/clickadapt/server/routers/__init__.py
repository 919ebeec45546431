"""HTTP routers: thin wrappers that turn requests into :class:`~clickadapt.server.service.AnnotationService` calls."""
