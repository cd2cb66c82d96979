"""Every table. Importing this module registers them all on SQLModel.metadata, for Alembic and the schema check.

Tables shared by several features live in `service.models`; a table one feature owns lives in its package
(`service.audit.tables`, `service.routing.tables`), which `service.models` cannot import: those packages read the
shared tables, so the import would be a cycle.
"""

import service.analytics.tables
import service.audit.tables
import service.models
import service.notifications.tables
import service.outbound.tables
import service.routing.tables  # noqa: F401  (all are imported for their tables)
