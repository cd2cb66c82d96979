<?php
/**
 * Delivery: every event is stored in a small table first, then sent; a delivery that fails stays there and
 * WP-Cron retries it with exponential backoff. Events of one comment go out in the order they happened.
 *
 * @package Switchboard_Connector
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The outbox table, the HTTP delivery (Standard Webhooks signing) and the WP-Cron retry loop.
 */
final class Switchboard_Queue {

	const DB_VERSION      = '1';
	const CRON_HOOK       = 'switchboard_drain_queue';  // Recurring, every minute.
	const RETRY_HOOK      = 'switchboard_retry_queue';  // Single, scheduled for the next due retry after a failure.
	const CRON_SCHEDULE   = 'switchboard_every_minute';
	const MAX_ATTEMPTS    = 20;
	const MAX_AGE         = DAY_IN_SECONDS;
	const BASE_DELAY      = MINUTE_IN_SECONDS;
	const MAX_DELAY       = HOUR_IN_SECONDS;
	const DEFAULT_TIMEOUT = 5;
	const DRAIN_SECONDS   = 20;  // One cron run stops starting new deliveries after this long.
	const FLUSH_SECONDS   = 10;  // So does the end of a request (the rest wait for the cron).

	// What one attempt came to.
	const DELIVERED   = 'delivered';    // 2xx: the row is gone.
	const GAVE_UP     = 'gave_up';      // Not retried any more (4xx, or out of attempts): the row is kept as failed.
	const RETRY       = 'retry';        // Switchboard answered 408, 429 or 5xx: tried again after the backoff.
	const UNREACHABLE = 'unreachable';  // No answer (refused, timeout, DNS): tried again after the backoff.

	/**
	 * Hooks: cron schedule and handlers, table upkeep.
	 */
	public static function init(): void {
		add_filter( 'cron_schedules', array( self::class, 'cron_schedules' ) );
		add_action( self::CRON_HOOK, array( self::class, 'drain' ) );
		add_action( self::RETRY_HOOK, array( self::class, 'drain' ) );
		add_action( 'plugins_loaded', array( self::class, 'maybe_upgrade' ) );
		add_action( 'init', array( self::class, 'ensure_scheduled' ) );
	}

	/**
	 * The outbox table's name.
	 */
	public static function table(): string {
		global $wpdb;
		return $wpdb->prefix . 'switchboard_queue';
	}

	/**
	 * Activation: create the table, schedule the drain.
	 */
	public static function activate(): void {
		self::install();
		self::ensure_scheduled();
	}

	/**
	 * Deactivation: stop the cron events (queued events stay in the table for a later activation).
	 */
	public static function deactivate(): void {
		wp_clear_scheduled_hook( self::CRON_HOOK );
		wp_clear_scheduled_hook( self::RETRY_HOOK );
	}

	/**
	 * Create or upgrade the table.
	 */
	public static function install(): void {
		global $wpdb;
		require_once ABSPATH . 'wp-admin/includes/upgrade.php';
		$table   = self::table();
		$charset = $wpdb->get_charset_collate();
		dbDelta(
			"CREATE TABLE {$table} (
  id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  event_id varchar(64) NOT NULL,
  comment_id bigint(20) unsigned NOT NULL,
  event_type varchar(32) NOT NULL,
  body longtext NOT NULL,
  status varchar(16) NOT NULL DEFAULT 'pending',
  attempts int(10) unsigned NOT NULL DEFAULT 0,
  created_at bigint(20) NOT NULL,
  next_attempt_at bigint(20) NOT NULL,
  locked_until bigint(20) NOT NULL DEFAULT 0,
  last_attempt_at bigint(20) NOT NULL DEFAULT 0,
  last_error text NULL,
  PRIMARY KEY  (id),
  UNIQUE KEY event_id (event_id),
  KEY comment_status (comment_id,status,id),
  KEY status_due (status,next_attempt_at)
) {$charset};"
		);
		update_option( 'switchboard_db_version', self::DB_VERSION );
	}

	/**
	 * Create the table when the plugin was updated (or its activation hook never ran).
	 */
	public static function maybe_upgrade(): void {
		if ( get_option( 'switchboard_db_version' ) !== self::DB_VERSION ) {
			self::install();
		}
	}

	/**
	 * Adds the "every minute" interval.
	 *
	 * @param array $schedules WP-Cron's intervals.
	 * @return array
	 */
	public static function cron_schedules( $schedules ) {
		$schedules[ self::CRON_SCHEDULE ] = array(
			'interval' => MINUTE_IN_SECONDS,
			'display'  => __( 'Every minute (Switchboard)', 'switchboard-connector' ),
		);
		return $schedules;
	}

	/**
	 * Keep the recurring drain scheduled.
	 */
	public static function ensure_scheduled(): void {
		if ( ! wp_next_scheduled( self::CRON_HOOK ) ) {
			wp_schedule_event( time(), self::CRON_SCHEDULE, self::CRON_HOOK );
		}
	}

	// ---- settings ----------------------------------------------------------------------------------------

	/**
	 * The webhook URL, or '' when none is set.
	 */
	public static function url(): string {
		return trim( (string) get_option( 'switchboard_url', '' ) );
	}

	/**
	 * Seconds one delivery may take.
	 */
	public static function timeout(): int {
		$timeout = (int) get_option( 'switchboard_timeout', self::DEFAULT_TIMEOUT );
		return max( 1, min( 30, $timeout > 0 ? $timeout : self::DEFAULT_TIMEOUT ) );
	}

	/**
	 * The HMAC key of a `whsec_<base64>` secret, or null when it is not one.
	 *
	 * @param string $secret The secret as Switchboard showed it.
	 */
	public static function secret_key( string $secret ): ?string {
		$secret = trim( $secret );
		if ( ! str_starts_with( $secret, 'whsec_' ) ) {
			return null;
		}
		$key = base64_decode( substr( $secret, 6 ), true );
		return ( false === $key || '' === $key ) ? null : $key;
	}

	/**
	 * True when a URL and a valid secret are set.
	 */
	public static function configured(): bool {
		return '' !== self::url() && null !== self::secret_key( (string) get_option( 'switchboard_secret', '' ) );
	}

	// ---- the outbox --------------------------------------------------------------------------------------

	/**
	 * Store one event, claimed by this request (the caller sends it next); returns its row id.
	 *
	 * @param string $event_id   The webhook-id.
	 * @param int    $comment_id The comment it is about.
	 * @param string $type       comment.created, comment.updated or comment.deleted.
	 * @param string $body       The exact JSON body to send on every attempt.
	 */
	public static function enqueue( string $event_id, int $comment_id, string $type, string $body ): int {
		global $wpdb;
		$now = time();
		$wpdb->insert(
			self::table(),
			array(
				'event_id'        => $event_id,
				'comment_id'      => $comment_id,
				'event_type'      => $type,
				'body'            => $body,
				'status'          => 'pending',
				'attempts'        => 0,
				'created_at'      => $now,
				'next_attempt_at' => $now,
				'locked_until'    => $now + self::timeout() + MINUTE_IN_SECONDS,
			),
			array( '%s', '%d', '%s', '%s', '%s', '%d', '%d', '%d', '%d' )
		);
		$id = (int) $wpdb->insert_id;
		if ( 0 === $id ) {
			/* translators: %s: the database's error message */
			self::note_error( sprintf( __( 'An event could not be stored (%s) and was not sent.', 'switchboard-connector' ), $wpdb->last_error ), $event_id );
		}
		return $id;
	}

	/**
	 * Send the events this request has just stored, in order. Left for the cron: an event whose comment has
	 * older events still waiting (it goes behind them), and, once one delivery failed or this took too long,
	 * the rest (a bulk action while Switchboard is down must not wait for a timeout per comment).
	 *
	 * @param int[] $ids Row ids from enqueue().
	 */
	public static function deliver_new( array $ids ): void {
		global $wpdb;
		$table    = self::table();
		$deadline = microtime( true ) + max( self::FLUSH_SECONDS, 2 * self::timeout() );
		$sending  = true;
		foreach ( $ids as $id ) {
			$row = self::row( $id );
			if ( null === $row ) {
				continue;
			}
			if ( ! $sending || microtime( true ) > $deadline ) {
				$wpdb->update( $table, array( 'locked_until' => 0 ), array( 'id' => $row->id ), array( '%d' ), array( '%d' ) );
				continue;
			}
			$older = (int) $wpdb->get_var(
				$wpdb->prepare(
					"SELECT COUNT(*) FROM {$table} WHERE comment_id = %d AND status = 'pending' AND id < %d",
					$row->comment_id,
					$row->id
				)
			);
			if ( $older > 0 ) {
				$wpdb->update( $table, array( 'locked_until' => 0 ), array( 'id' => $row->id ), array( '%d' ), array( '%d' ) );
				continue;
			}
			$outcome = self::attempt( $row );
			$sending = self::RETRY !== $outcome && self::UNREACHABLE !== $outcome;
		}
		self::schedule_retry();
	}

	/**
	 * The WP-Cron handler: send every due event, oldest first, each comment's events in order (a comment whose
	 * oldest event fails waits); stops when Switchboard cannot be reached at all.
	 */
	public static function drain(): void {
		global $wpdb;
		if ( ! self::configured() ) {
			return;
		}
		$table    = self::table();
		$deadline = microtime( true ) + self::DRAIN_SECONDS;
		$blocked  = array();
		$rows     = $wpdb->get_results(
			"SELECT id, comment_id, next_attempt_at, locked_until FROM {$table} WHERE status = 'pending' ORDER BY id ASC LIMIT 1000"
		);
		foreach ( (array) $rows as $candidate ) {
			if ( microtime( true ) > $deadline ) {
				break;
			}
			$comment = (int) $candidate->comment_id;
			if ( isset( $blocked[ $comment ] ) ) {
				continue;  // An older event of this comment is still waiting: keep the order.
			}
			$now     = time();
			$claimed = $wpdb->query(
				$wpdb->prepare(
					"UPDATE {$table} SET locked_until = %d
					 WHERE id = %d AND status = 'pending' AND locked_until <= %d AND next_attempt_at <= %d",
					$now + self::timeout() + MINUTE_IN_SECONDS,
					$candidate->id,
					$now,
					$now
				)
			);
			if ( 1 !== $claimed ) {
				$blocked[ $comment ] = true;  // Not due yet, or being sent by another request.
				continue;
			}
			$row = self::row( (int) $candidate->id );
			if ( null === $row ) {
				continue;
			}
			$outcome = self::attempt( $row );
			if ( self::UNREACHABLE === $outcome ) {
				break;  // The rest would time out too; their turn comes at the next run.
			}
			if ( self::RETRY === $outcome ) {
				$blocked[ $comment ] = true;
			}
		}
		self::schedule_retry();
	}

	/**
	 * One delivery attempt of a claimed row: DELIVERED, GAVE_UP, RETRY or UNREACHABLE.
	 *
	 * @param object $row The queue row.
	 */
	private static function attempt( object $row ): string {
		global $wpdb;
		$table = self::table();
		$key   = self::secret_key( (string) get_option( 'switchboard_secret', '' ) );
		$url   = self::url();
		if ( null === $key || '' === $url ) {
			$wpdb->update( $table, array( 'locked_until' => 0 ), array( 'id' => $row->id ), array( '%d' ), array( '%d' ) );
			self::note_error( __( 'Switchboard is not configured (webhook URL and whsec_ secret): events wait in the queue.', 'switchboard-connector' ), (string) $row->event_id );
			return self::UNREACHABLE;
		}
		$timestamp = time();
		$signature = base64_encode( hash_hmac( 'sha256', $row->event_id . '.' . $timestamp . '.' . $row->body, $key, true ) );
		$response  = wp_remote_post(
			$url,
			array(
				'timeout'     => self::timeout(),
				'redirection' => 0,
				'blocking'    => true,
				'httpversion' => '1.1',
				'user-agent'  => 'Switchboard-Connector/' . SWITCHBOARD_CONNECTOR_VERSION . ' (WordPress/' . get_bloginfo( 'version' ) . ')',
				'headers'     => array(
					'content-type'      => 'application/json',
					'webhook-id'        => $row->event_id,
					'webhook-timestamp' => (string) $timestamp,
					'webhook-signature' => 'v1,' . $signature,
				),
				'body'        => $row->body,
				'data_format' => 'body',
			)
		);

		$code        = is_wp_error( $response ) ? 0 : (int) wp_remote_retrieve_response_code( $response );
		$retry_after = 0;
		if ( is_wp_error( $response ) ) {
			$error     = $response->get_error_message();
			$retryable = true;
		} elseif ( $code >= 200 && $code < 300 ) {
			$wpdb->delete( $table, array( 'id' => $row->id ), array( '%d' ) );
			update_option( 'switchboard_last_delivery', time(), false );
			return self::DELIVERED;
		} else {
			$error       = self::describe_response( $code, $response );
			$retryable   = 408 === $code || 429 === $code || $code >= 500;
			$retry_after = (int) wp_remote_retrieve_header( $response, 'retry-after' );
		}

		$attempts = (int) $row->attempts + 1;
		$too_old  = ( $timestamp - (int) $row->created_at ) >= self::MAX_AGE;
		$give_up  = ! $retryable || $attempts >= self::MAX_ATTEMPTS || $too_old;
		$delay    = min( self::MAX_DELAY, self::BASE_DELAY * ( 2 ** min( $attempts - 1, 16 ) ) );
		if ( $retry_after > 0 ) {
			$delay = max( $delay, min( self::MAX_DELAY, $retry_after ) );
		}
		$delay = (int) apply_filters( 'switchboard_retry_delay', $delay, $attempts, $code );
		if ( $give_up ) {
			$error .= $retryable
				/* translators: %d: number of attempts */
				? ' ' . sprintf( __( '(gave up after %d attempts)', 'switchboard-connector' ), $attempts )
				: ' ' . __( '(not retried)', 'switchboard-connector' );
		}
		$wpdb->update(
			$table,
			array(
				'status'          => $give_up ? 'failed' : 'pending',
				'attempts'        => $attempts,
				'next_attempt_at' => $timestamp + max( 1, $delay ),
				'locked_until'    => 0,
				'last_attempt_at' => $timestamp,
				'last_error'      => $error,
			),
			array( 'id' => $row->id ),
			array( '%s', '%d', '%d', '%d', '%d', '%s' ),
			array( '%d' )
		);
		self::note_error( $error, (string) $row->event_id );
		if ( $give_up ) {
			return self::GAVE_UP;  // It no longer holds back the comment's newer events.
		}
		return is_wp_error( $response ) ? self::UNREACHABLE : self::RETRY;
	}

	/**
	 * "HTTP 401: invalid_signature" from an answer.
	 *
	 * @param int   $code     The status code.
	 * @param array $response The wp_remote_post() answer.
	 */
	private static function describe_response( int $code, $response ): string {
		$text = 'HTTP ' . $code;
		$body = wp_strip_all_tags( (string) wp_remote_retrieve_body( $response ) );
		$json = json_decode( $body, true );
		if ( is_array( $json ) && isset( $json['code'] ) && is_string( $json['code'] ) ) {
			$body = $json['code'] . ( isset( $json['detail'] ) && is_string( $json['detail'] ) ? ': ' . $json['detail'] : '' );
		}
		$body = trim( preg_replace( '/\s+/', ' ', $body ) );
		return '' === $body ? $text : $text . ': ' . mb_substr( $body, 0, 300 );
	}

	/**
	 * Remember the last problem for the settings page (never anything secret: a message and an event id).
	 *
	 * @param string $message  What went wrong.
	 * @param string $event_id The event it happened to, if any.
	 */
	public static function note_error( string $message, string $event_id = '' ): void {
		update_option(
			'switchboard_last_error',
			array(
				'time'     => time(),
				'message'  => $message,
				'event_id' => $event_id,
			),
			false
		);
	}

	/**
	 * After a failure: a single cron event for the earliest due retry (the every-minute drain also covers it).
	 */
	public static function schedule_retry(): void {
		global $wpdb;
		$table = self::table();
		$next  = $wpdb->get_var( "SELECT MIN(next_attempt_at) FROM {$table} WHERE status = 'pending'" );
		if ( null !== $next ) {
			wp_schedule_single_event( max( time() + 1, (int) $next ), self::RETRY_HOOK );
			self::ensure_scheduled();
		}
	}

	/**
	 * One row, or null.
	 *
	 * @param int $id Row id.
	 */
	private static function row( int $id ): ?object {
		global $wpdb;
		$table = self::table();
		$row   = $wpdb->get_row( $wpdb->prepare( "SELECT * FROM {$table} WHERE id = %d", $id ) );
		return is_object( $row ) ? $row : null;
	}

	// ---- for the settings page ---------------------------------------------------------------------------

	/**
	 * Counts by status: ['pending' => n, 'failed' => m].
	 */
	public static function counts(): array {
		global $wpdb;
		$table  = self::table();
		$counts = array(
			'pending' => 0,
			'failed'  => 0,
		);
		foreach ( (array) $wpdb->get_results( "SELECT status, COUNT(*) AS n FROM {$table} GROUP BY status" ) as $row ) {
			$counts[ $row->status ] = (int) $row->n;
		}
		return $counts;
	}

	/**
	 * The latest events that were given up.
	 *
	 * @param int $limit How many.
	 */
	public static function failed( int $limit = 20 ): array {
		global $wpdb;
		$table = self::table();
		return (array) $wpdb->get_results(
			$wpdb->prepare(
				"SELECT id, event_id, comment_id, event_type, attempts, created_at, last_attempt_at, last_error
				 FROM {$table} WHERE status = 'failed' ORDER BY id DESC LIMIT %d",
				$limit
			)
		);
	}

	/**
	 * Put every given-up event back in the queue, due now, with a fresh retry budget.
	 */
	public static function retry_failed(): int {
		global $wpdb;
		$table = self::table();
		$now   = time();
		$count = (int) $wpdb->query(
			$wpdb->prepare(
				"UPDATE {$table} SET status = 'pending', attempts = 0, created_at = %d, next_attempt_at = %d, locked_until = 0
				 WHERE status = 'failed'",
				$now,
				$now
			)
		);
		self::schedule_retry();
		return $count;
	}

	/**
	 * Forget every given-up event.
	 */
	public static function discard_failed(): int {
		global $wpdb;
		$table = self::table();
		return (int) $wpdb->query( "DELETE FROM {$table} WHERE status = 'failed'" );
	}
}
