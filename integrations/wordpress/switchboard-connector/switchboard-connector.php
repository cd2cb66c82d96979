<?php
/**
 * Plugin Name:       Switchboard Connector
 * Description:       Sends every comment event (created, updated, deleted) to Switchboard as a signed Standard Webhooks delivery, retrying through WP-Cron while Switchboard cannot be reached.
 * Version:           1.0.0
 * Requires at least: 6.1
 * Requires PHP:      8.1
 * Author:            Switchboard
 * License:           GPL-2.0-or-later
 * Text Domain:       switchboard-connector
 *
 * Settings (Settings > Switchboard, or update_option()):
 *   switchboard_url      the Switchboard webhook URL, https://switchboard.example/v1/webhooks/<slug>
 *   switchboard_secret   the source's signing secret, whsec_<base64>
 *   switchboard_timeout  seconds one delivery may take (default 5)
 *
 * @package Switchboard_Connector
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

define( 'SWITCHBOARD_CONNECTOR_VERSION', '1.0.0' );
define( 'SWITCHBOARD_CONNECTOR_FILE', __FILE__ );

require_once __DIR__ . '/includes/class-switchboard-queue.php';
require_once __DIR__ . '/includes/class-switchboard-events.php';
require_once __DIR__ . '/includes/class-switchboard-admin.php';

register_activation_hook( __FILE__, array( 'Switchboard_Queue', 'activate' ) );
register_deactivation_hook( __FILE__, array( 'Switchboard_Queue', 'deactivate' ) );

Switchboard_Queue::init();
Switchboard_Events::init();
Switchboard_Admin::init();
