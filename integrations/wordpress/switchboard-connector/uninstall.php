<?php
/**
 * Removing the plugin (Plugins > Delete): its table, options and cron events go too.
 *
 * @package Switchboard_Connector
 */

if ( ! defined( 'WP_UNINSTALL_PLUGIN' ) ) {
	exit;
}

global $wpdb;
$switchboard_table = $wpdb->prefix . 'switchboard_queue';
$wpdb->query( "DROP TABLE IF EXISTS {$switchboard_table}" );  // phpcs:ignore WordPress.DB.DirectDatabaseQuery
foreach ( array( 'switchboard_url', 'switchboard_secret', 'switchboard_timeout', 'switchboard_db_version', 'switchboard_last_error', 'switchboard_last_delivery' ) as $switchboard_option ) {
	delete_option( $switchboard_option );
}
wp_clear_scheduled_hook( 'switchboard_drain_queue' );
wp_clear_scheduled_hook( 'switchboard_retry_queue' );
