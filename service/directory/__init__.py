"""Who answers: members, their platform identities, teams and their leads."""
