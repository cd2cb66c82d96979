<?php
/**
 * Settings > Switchboard: the webhook URL, the signing secret (never shown again once saved), the timeout,
 * and the state of the delivery queue.
 *
 * @package Switchboard_Connector
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The settings page.
 */
final class Switchboard_Admin {

	const PAGE = 'switchboard';

	/**
	 * Register the admin hooks.
	 */
	public static function init(): void {
		add_action( 'admin_init', array( self::class, 'register_settings' ) );
		add_action( 'admin_menu', array( self::class, 'menu' ) );
		add_action( 'admin_post_switchboard_retry_failed', array( self::class, 'retry_failed' ) );
		add_action( 'admin_post_switchboard_discard_failed', array( self::class, 'discard_failed' ) );
		add_filter( 'plugin_action_links_' . plugin_basename( SWITCHBOARD_CONNECTOR_FILE ), array( self::class, 'action_links' ) );
	}

	/**
	 * The three options, with their checks (update_option() from code skips these: it is trusted).
	 */
	public static function register_settings(): void {
		register_setting(
			self::PAGE,
			'switchboard_url',
			array(
				'type'              => 'string',
				'sanitize_callback' => array( self::class, 'sanitize_url' ),
				'default'           => '',
			)
		);
		register_setting(
			self::PAGE,
			'switchboard_secret',
			array(
				'type'              => 'string',
				'sanitize_callback' => array( self::class, 'sanitize_secret' ),
				'default'           => '',
			)
		);
		register_setting(
			self::PAGE,
			'switchboard_timeout',
			array(
				'type'              => 'integer',
				'sanitize_callback' => array( self::class, 'sanitize_timeout' ),
				'default'           => Switchboard_Queue::DEFAULT_TIMEOUT,
			)
		);
	}

	/**
	 * An http(s) URL, or the previous value with an error.
	 *
	 * @param mixed $value Submitted value.
	 */
	public static function sanitize_url( $value ): string {
		$value = trim( (string) $value );
		if ( '' === $value ) {
			return '';
		}
		$url = esc_url_raw( $value, array( 'http', 'https' ) );
		if ( '' === $url || ! preg_match( '#^https?://[^/?\#\s]+#i', $url ) ) {
			add_settings_error( 'switchboard_url', 'switchboard_url', __( 'The webhook URL must be an http:// or https:// URL.', 'switchboard-connector' ) );
			return (string) get_option( 'switchboard_url', '' );
		}
		return $url;
	}

	/**
	 * A whsec_ secret; an empty field keeps the saved one (the page never shows it).
	 *
	 * @param mixed $value Submitted value.
	 */
	public static function sanitize_secret( $value ): string {
		$value = trim( (string) $value );
		$saved = (string) get_option( 'switchboard_secret', '' );
		if ( '' === $value || $value === $saved ) {
			return $saved;
		}
		if ( null === Switchboard_Queue::secret_key( $value ) ) {
			add_settings_error( 'switchboard_secret', 'switchboard_secret', __( 'The signing secret must be the whsec_… value Switchboard showed when the source was created. The saved secret was kept.', 'switchboard-connector' ) );
			return $saved;
		}
		return $value;
	}

	/**
	 * 1 to 30 seconds.
	 *
	 * @param mixed $value Submitted value.
	 */
	public static function sanitize_timeout( $value ): int {
		$timeout = (int) $value;
		return $timeout >= 1 && $timeout <= 30 ? $timeout : Switchboard_Queue::DEFAULT_TIMEOUT;
	}

	/**
	 * Settings > Switchboard.
	 */
	public static function menu(): void {
		add_options_page(
			__( 'Switchboard', 'switchboard-connector' ),
			__( 'Switchboard', 'switchboard-connector' ),
			'manage_options',
			self::PAGE,
			array( self::class, 'render' )
		);
	}

	/**
	 * A "Settings" link on the Plugins screen.
	 *
	 * @param array $links The plugin's links.
	 */
	public static function action_links( $links ): array {
		$url = admin_url( 'options-general.php?page=' . self::PAGE );
		array_unshift( $links, '<a href="' . esc_url( $url ) . '">' . esc_html__( 'Settings', 'switchboard-connector' ) . '</a>' );
		return $links;
	}

	/**
	 * The page.
	 */
	public static function render(): void {
		if ( ! current_user_can( 'manage_options' ) ) {
			return;
		}
		$url        = Switchboard_Queue::url();
		$has_secret = null !== Switchboard_Queue::secret_key( (string) get_option( 'switchboard_secret', '' ) );
		$counts     = Switchboard_Queue::counts();
		$last_error = get_option( 'switchboard_last_error' );
		$delivered  = (int) get_option( 'switchboard_last_delivery', 0 );
		$notice     = isset( $_GET['switchboard_notice'] ) ? sanitize_key( wp_unslash( $_GET['switchboard_notice'] ) ) : '';  // phpcs:ignore WordPress.Security.NonceVerification.Recommended
		?>
		<div class="wrap">
			<h1><?php esc_html_e( 'Switchboard', 'switchboard-connector' ); ?></h1>
			<?php if ( 'retried' === $notice ) : ?>
				<div class="notice notice-success"><p><?php esc_html_e( 'Failed events are queued again.', 'switchboard-connector' ); ?></p></div>
			<?php elseif ( 'discarded' === $notice ) : ?>
				<div class="notice notice-success"><p><?php esc_html_e( 'Failed events were discarded.', 'switchboard-connector' ); ?></p></div>
			<?php endif; ?>
			<p><?php esc_html_e( 'Every new, edited, moderated or deleted comment is sent to Switchboard as a signed webhook. Deliveries that fail are retried by WP-Cron (after 1, 2, 4 … minutes, at most an hour apart, for up to 24 hours).', 'switchboard-connector' ); ?></p>

			<form method="post" action="options.php">
				<?php settings_fields( self::PAGE ); ?>
				<table class="form-table" role="presentation">
					<tr>
						<th scope="row"><label for="switchboard_url"><?php esc_html_e( 'Webhook URL', 'switchboard-connector' ); ?></label></th>
						<td>
							<input name="switchboard_url" id="switchboard_url" type="url" class="large-text code" value="<?php echo esc_attr( $url ); ?>" placeholder="https://switchboard.example/v1/webhooks/intranet">
							<p class="description"><?php esc_html_e( 'Switchboard\'s address for this source: https://<switchboard>/v1/webhooks/<slug>.', 'switchboard-connector' ); ?></p>
						</td>
					</tr>
					<tr>
						<th scope="row"><label for="switchboard_secret"><?php esc_html_e( 'Signing secret', 'switchboard-connector' ); ?></label></th>
						<td>
							<input name="switchboard_secret" id="switchboard_secret" type="password" class="regular-text code" value="" autocomplete="new-password" placeholder="whsec_…">
							<p class="description" id="switchboard-secret-state">
								<?php
								if ( $has_secret ) {
									esc_html_e( 'A secret is saved (whsec_••••••••). Leave the field empty to keep it.', 'switchboard-connector' );
								} else {
									esc_html_e( 'No secret is saved yet: paste the whsec_… value Switchboard showed when the source was created.', 'switchboard-connector' );
								}
								?>
							</p>
						</td>
					</tr>
					<tr>
						<th scope="row"><label for="switchboard_timeout"><?php esc_html_e( 'Timeout (seconds)', 'switchboard-connector' ); ?></label></th>
						<td><input name="switchboard_timeout" id="switchboard_timeout" type="number" min="1" max="30" class="small-text" value="<?php echo esc_attr( (string) Switchboard_Queue::timeout() ); ?>"></td>
					</tr>
				</table>
				<?php submit_button(); ?>
			</form>

			<h2><?php esc_html_e( 'Delivery', 'switchboard-connector' ); ?></h2>
			<table class="widefat striped" style="max-width: 60em" id="switchboard-status">
				<tbody>
					<tr><th><?php esc_html_e( 'Waiting in the queue', 'switchboard-connector' ); ?></th><td id="switchboard-pending"><?php echo esc_html( (string) $counts['pending'] ); ?></td></tr>
					<tr><th><?php esc_html_e( 'Failed (not retried any more)', 'switchboard-connector' ); ?></th><td id="switchboard-failed"><?php echo esc_html( (string) $counts['failed'] ); ?></td></tr>
					<tr><th><?php esc_html_e( 'Last successful delivery', 'switchboard-connector' ); ?></th><td><?php echo esc_html( $delivered ? self::when( $delivered ) : __( 'none yet', 'switchboard-connector' ) ); ?></td></tr>
					<tr>
						<th><?php esc_html_e( 'Last error', 'switchboard-connector' ); ?></th>
						<td id="switchboard-last-error">
							<?php
							if ( is_array( $last_error ) && ! empty( $last_error['message'] ) ) {
								echo esc_html( self::when( (int) $last_error['time'] ) . ' — ' . $last_error['message'] );
								if ( ! empty( $last_error['event_id'] ) ) {
									echo ' <code>' . esc_html( $last_error['event_id'] ) . '</code>';
								}
							} else {
								esc_html_e( 'none', 'switchboard-connector' );
							}
							?>
						</td>
					</tr>
				</tbody>
			</table>

			<?php $failed = Switchboard_Queue::failed(); ?>
			<?php if ( $failed ) : ?>
				<h2><?php esc_html_e( 'Failed events', 'switchboard-connector' ); ?></h2>
				<table class="widefat striped" id="switchboard-failed-events">
					<thead><tr>
						<th><?php esc_html_e( 'Event', 'switchboard-connector' ); ?></th>
						<th><?php esc_html_e( 'Type', 'switchboard-connector' ); ?></th>
						<th><?php esc_html_e( 'Comment', 'switchboard-connector' ); ?></th>
						<th><?php esc_html_e( 'Attempts', 'switchboard-connector' ); ?></th>
						<th><?php esc_html_e( 'Last attempt', 'switchboard-connector' ); ?></th>
						<th><?php esc_html_e( 'Error', 'switchboard-connector' ); ?></th>
					</tr></thead>
					<tbody>
					<?php foreach ( $failed as $row ) : ?>
						<tr>
							<td><code><?php echo esc_html( $row->event_id ); ?></code></td>
							<td><?php echo esc_html( $row->event_type ); ?></td>
							<td><?php echo esc_html( (string) $row->comment_id ); ?></td>
							<td><?php echo esc_html( (string) $row->attempts ); ?></td>
							<td><?php echo esc_html( self::when( (int) $row->last_attempt_at ) ); ?></td>
							<td><?php echo esc_html( (string) $row->last_error ); ?></td>
						</tr>
					<?php endforeach; ?>
					</tbody>
				</table>
				<p>
					<?php self::action_button( 'switchboard_retry_failed', __( 'Retry failed events', 'switchboard-connector' ), 'secondary' ); ?>
					<?php self::action_button( 'switchboard_discard_failed', __( 'Discard failed events', 'switchboard-connector' ), 'delete' ); ?>
				</p>
			<?php endif; ?>
		</div>
		<?php
	}

	/**
	 * A one-button form posting to admin-post.php.
	 *
	 * @param string $action The admin-post action.
	 * @param string $label  The button's text.
	 * @param string $type   submit_button() type.
	 */
	private static function action_button( string $action, string $label, string $type ): void {
		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '" style="display:inline-block;margin-right:1em">';
		echo '<input type="hidden" name="action" value="' . esc_attr( $action ) . '">';
		wp_nonce_field( $action );
		submit_button( $label, $type, 'submit', false );
		echo '</form>';
	}

	/**
	 * Handler of "Retry failed events".
	 */
	public static function retry_failed(): void {
		self::guard( 'switchboard_retry_failed' );
		Switchboard_Queue::retry_failed();
		self::back( 'retried' );
	}

	/**
	 * Handler of "Discard failed events".
	 */
	public static function discard_failed(): void {
		self::guard( 'switchboard_discard_failed' );
		Switchboard_Queue::discard_failed();
		self::back( 'discarded' );
	}

	/**
	 * Capability and nonce.
	 *
	 * @param string $action The nonce action.
	 */
	private static function guard( string $action ): void {
		if ( ! current_user_can( 'manage_options' ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to do that.', 'switchboard-connector' ), 403 );
		}
		check_admin_referer( $action );
	}

	/**
	 * Back to the page with a notice.
	 *
	 * @param string $notice Which notice.
	 */
	private static function back( string $notice ): void {
		wp_safe_redirect( add_query_arg( 'switchboard_notice', $notice, admin_url( 'options-general.php?page=' . self::PAGE ) ) );
		exit;
	}

	/**
	 * A timestamp in the site's date and time format.
	 *
	 * @param int $timestamp Unix time.
	 */
	private static function when( int $timestamp ): string {
		return $timestamp > 0 ? wp_date( get_option( 'date_format' ) . ' ' . get_option( 'time_format' ), $timestamp ) : '—';
	}
}
