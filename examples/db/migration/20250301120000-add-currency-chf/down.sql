SET LOCAL hectic.migration_mode = 'on';
DELETE FROM shop.currency WHERE code = 'CHF';
