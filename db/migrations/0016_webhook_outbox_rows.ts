// Webhook outbox rows of up to 100 events (docs/operations.md#webhooks): the SQL lives in
// 0016_webhook_outbox_rows.sql. It has no way down: going back would also need the earlier
// trigger functions of 0011 and 0013; restore a backup taken before it instead.
import { runSqlFile } from './sql-file.ts';

export const up = runSqlFile(new URL('./0016_webhook_outbox_rows.sql', import.meta.url));
